"""Public endpoints the mothers' page needs beside the rooms: the site's
layout, a predicted wait, and Web Push reminders. No login."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from paging.webpush import push_host_allowed
from server.context import Ctx
from server.security import StaffUser
from server.services.rate_limit import WriteLimiter
from server.services.rooms import PublicRoom
from server.services.site import Site, SiteService
from server.services.waits import WaitEstimate
from server.services.webpush import MOTHER_TTL_S, Subscription, WebPush

router = APIRouter(prefix="/api", tags=["pages"])


def _site(ctx: Ctx) -> SiteService:
    return ctx.site


def _push(ctx: Ctx) -> WebPush:
    return ctx.push


SiteDep = Annotated[SiteService, Depends(_site)]
PushDep = Annotated[WebPush, Depends(_push)]


@router.get("/site", response_model=Site)
async def site(ctx: Ctx, layout: SiteDep) -> Site:
    """Buildings with their floors, and walking minutes between buildings."""
    return layout.site(ctx.registry.current)


def near_rooms(
    ctx: Ctx, layout: SiteService, building: str, floor: int, company: str | None
) -> list[PublicRoom]:
    """Rooms a mother in `building`/`floor` may use within `pages.near_minutes`."""
    out = []
    for r in ctx.rooms.query():
        if r.access == "company" and (not company or company != r.company):
            continue
        minutes = layout.minutes(building, floor, r.building, r.floor)
        if minutes is not None and minutes <= layout.near_minutes:
            out.append(r)
    return out


@router.get("/wait", response_model=WaitEstimate)
async def wait(
    ctx: Ctx,
    request: Request,
    layout: SiteDep,
    building: Annotated[str | None, Query(max_length=100)] = None,
    floor: Annotated[int, Query(ge=-10, le=200)] = 1,
    rooms: Annotated[
        str | None, Query(max_length=2000, description="Comma-separated room ids")
    ] = None,
    company: Annotated[str | None, Query(max_length=100)] = None,
) -> WaitEstimate:
    """Predicted wait for the rooms near `building`/`floor` (or the `rooms`
    given), from the history of session lengths."""
    if rooms:
        wanted = set(rooms.split(","))
        chosen = [r for r in ctx.rooms.query() if r.id in wanted]
    elif building:
        chosen = near_rooms(ctx, layout, building, floor, company)
    else:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "give building (and floor) or rooms"
        )
    return await ctx.waits.estimate(chosen)


class PushKey(BaseModel):
    public_key: str | None
    enabled: bool


@router.get("/push/key", response_model=PushKey)
async def push_key(push: PushDep) -> PushKey:
    """The VAPID public key for `pushManager.subscribe`; enabled false = no Web Push."""
    return PushKey(public_key=push.public_key if push.enabled else None, enabled=push.enabled)


class RoomReminder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscription: Subscription
    #: Tell me when one of these rooms is free (at most 50).
    rooms: list[str] = Field(min_length=1, max_length=50)
    lang: str = Field("zh", pattern="^(zh|en)$")


class StaffPush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscription: Subscription


class Unsubscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(max_length=2000)


def _need(push: WebPush, sub: Subscription) -> None:
    if not push.enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Web Push is not configured")
    if not push_host_allowed(sub.endpoint, push.push_hosts):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "the endpoint is not at a known push service (pages.push_hosts)",
        )


#: Mothers' reminders waiting at once; each lapses after MOTHER_TTL_S (2 h).
#: 190 rooms with a few mothers waiting each is far below this.
MAX_REMINDERS = 5000
_writes = WriteLimiter()


async def anonymous_write(request: Request) -> None:
    """Anonymous writes are rate limited per client address and for everyone
    (429), so nobody can fill the server's disk with them."""
    client = request.client.host if request.client else "unknown"
    if not _writes.allow(client):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many requests; try again in a minute",
            headers={"Retry-After": "60"},
        )


AnonymousWrite = Depends(anonymous_write)


@router.post(
    "/push/reminder",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AnonymousWrite],
    responses={
        429: {"description": "Too many reminders from this client or in all"},
        503: {"description": "Too many reminders waiting"},
    },
)
async def push_reminder(ctx: Ctx, push: PushDep, body: RoomReminder) -> Response:
    """A one-time push when one of `rooms` becomes free (lapses after 2 h)."""
    _need(push, body.subscription)
    known = {r.id for r in ctx.registry.current.rooms}
    unknown = [r for r in body.rooms if r not in known]
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no room {unknown[0]!r}")
    now_ms = int(time.time() * 1000)
    if await push.db.count("mother", now_ms) >= MAX_REMINDERS:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "too many reminders waiting; try again later"
        )
    await push.db.save(
        body.subscription,
        "mother",
        rooms=body.rooms,
        lang=body.lang,
        expires_ms=now_ms + int(MOTHER_TTL_S * 1000),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/push/staff", status_code=status.HTTP_204_NO_CONTENT)
async def push_staff(push: PushDep, body: StaffPush, user: StaffUser) -> Response:
    """This phone gets a push for every new emergency call."""
    _need(push, body.subscription)
    await push.db.save(body.subscription, "staff", who=user.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/push/unsubscribe",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AnonymousWrite],
    responses={429: {"description": "Too many requests from this client or in all"}},
)
async def push_unsubscribe(push: PushDep, body: Unsubscribe) -> Response:
    await push.db.delete(body.endpoint)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
