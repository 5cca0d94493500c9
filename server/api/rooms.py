"""Public room data: what a mother's phone reads. No login."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from mamaroom.contract import RoomStateName
from server.context import Ctx
from server.security import optional_user
from server.services.accounts import User
from server.services.alerts import present
from server.services.rooms import PublicRoom

router = APIRouter(prefix="/api", tags=["rooms"])


@router.get("/rooms", response_model=list[PublicRoom])
async def list_rooms(
    ctx: Ctx,
    building: Annotated[str | None, Query(description="Building name (Chinese or English)")] = None,
    floor: Annotated[int | None, Query(ge=-10, le=200)] = None,
    state: RoomStateName | None = None,
) -> list[PublicRoom]:
    return ctx.rooms.query(building=building, floor=floor, state=state)


@router.get("/rooms/{room_id}", response_model=PublicRoom,
            responses={404: {"description": "No such room"}})
async def get_room(ctx: Ctx, room_id: str) -> PublicRoom:
    return ctx.rooms.get(room_id)


@router.get("/stream", response_class=EventSourceResponse)
async def stream(ctx: Ctx, user: Annotated[User | None, Depends(optional_user)]
                 ) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: first `snapshot` (every room), then `room` on every
    change. A staff connection (bearer token or session cookie) also gets
    `event: alert`, first
    one for each open alert, then one on every change."""
    staff = user is not None and user.has("staff")
    with ctx.fanout.subscribe(staff=staff) as queue:
        yield ServerSentEvent(event="snapshot", data=ctx.rooms.query(), retry=3000)
        if staff:
            for alert in await ctx.alerts.query(status=None, kind=None, open_only=True):
                yield ServerSentEvent(event="alert", data=present(alert))
        while True:
            item = await queue.get()
            if item is None:
                return  # too slow: end the stream; the browser reconnects and resyncs
            yield ServerSentEvent(event=item[0], raw_data=item[2])  # encoded once (fanout.py)
