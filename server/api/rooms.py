"""Public room data: what a mother's phone reads. No login."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.sse import EventSourceResponse
from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send

from mamaroom.contract import RoomStateName
from server.context import Ctx, ServerContext
from server.security import optional_user
from server.services.accounts import User
from server.services.alerts import present
from server.services.fanout import Event, frame
from server.services.rooms import PublicRoom

router = APIRouter(prefix="/api", tags=["rooms"])
#: How FastAPI encodes a `response_model=list[PublicRoom]` (its dump_json path).
ROOM_LIST = TypeAdapter(list[PublicRoom])
#: Tells a browser's EventSource how long to wait before reconnecting (ms).
RETRY_MS = 3000


@router.get("/rooms", response_model=list[PublicRoom])
async def list_rooms(
    ctx: Ctx,
    building: Annotated[str | None, Query(description="Building name (Chinese or English)")] = None,
    floor: Annotated[int | None, Query(ge=-10, le=200)] = None,
    state: RoomStateName | None = None,
) -> Response:
    # Encoded once per change of the rooms, not once per request. response_model
    # still gives the schema; these are the bytes FastAPI would send for it.
    body = ctx.rooms.encoded(
        ("rooms", building, floor, state),
        lambda: ROOM_LIST.dump_json(
            ctx.rooms.query(building=building, floor=floor, state=state), by_alias=True
        ),
    )
    return Response(body, media_type="application/json")


@router.get(
    "/rooms/{room_id}", response_model=PublicRoom, responses={404: {"description": "No such room"}}
)
async def get_room(ctx: Ctx, room_id: str) -> PublicRoom:
    return ctx.rooms.get(room_id)


#: The schema FastAPI documents for an SSE stream (OpenAPI 3.2's event object).
#: Written out because `response_class=EventSourceResponse` would make FastAPI
#: run the endpoint as its own SSE generator, which RoomStream replaces.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


@router.get(
    "/stream",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {"itemSchema": SSE_EVENT_SCHEMA}}}},
)
async def stream(ctx: Ctx, user: Annotated[User | None, Depends(optional_user)]) -> Response:
    """Server-Sent Events: first `snapshot` (every room), then `room` on every
    change. A staff connection (bearer token or session cookie) also gets
    `event: alert`, first
    one for each open alert, then one on every change."""
    return RoomStream(ctx, staff=user is not None and user.has("staff"))


class RoomStream(EventSourceResponse):
    """The live stream, written straight from the client's fanout queue.

    The queue holds each event's finished SSE frame (fanout.py), so a client
    costs one `send` per event. FastAPI's generator-based SSE put every event
    of every client through a pydantic model, two extra tasks and two memory
    streams with a timeout each: with 5,000 clients that made one change take
    seconds to reach them all (bench/sse_fanout.py). Same wire format, headers
    and keep-alive comment."""

    def __init__(self, ctx: ServerContext, *, staff: bool) -> None:
        # No StreamingResponse.__init__: there is no body iterator to wrap.
        self.status_code = 200
        self.background = None
        self.init_headers()  # text/event-stream; charset=utf-8
        self.headers["Cache-Control"] = "no-cache"
        self.headers["X-Accel-Buffering"] = "no"  # nginx must not buffer the stream
        self._ctx = ctx
        self._staff = staff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self._ctx
        with ctx.fanout.subscribe(staff=self._staff) as queue:
            # Taken at once after subscribing, so no change can fall in between.
            snapshot = ctx.rooms.encoded(
                "snapshot", lambda: frame("snapshot", ctx.rooms.query(), retry=RETRY_MS)
            )
            gone = asyncio.create_task(self._on_disconnect(receive, queue))
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                await send({"type": "http.response.body", "body": snapshot, "more_body": True})
                if self._staff:
                    for alert in await ctx.alerts.query(status=None, kind=None, open_only=True):
                        await send(
                            {
                                "type": "http.response.body",
                                "body": frame("alert", present(alert)),
                                "more_body": True,
                            }
                        )
                item: Event
                while (item := await queue.get()) is not None:
                    await send({"type": "http.response.body", "body": item[2], "more_body": True})
                # None: too slow, or gone. End the stream; a browser reconnects and resyncs.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client went away mid-send (servers of ASGI spec 2.4 say so)
            finally:
                gone.cancel()

    async def _on_disconnect(self, receive: Receive, queue: asyncio.Queue[Event]) -> None:
        # Without a reader of `receive`, a closed connection would go unnoticed
        # (uvicorn drops writes to it silently) and stay subscribed.
        while (await receive())["type"] != "http.disconnect":
            pass
        self._ctx.fanout.end(queue)
