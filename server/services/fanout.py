"""Fan-out of live events to stream clients, each with a bounded queue.

An event is encoded once, here, not once per client: to JSON and then to the
whole Server-Sent Events frame, so a stream client only writes the bytes it
is handed. With thousands of phones on the mothers' page, per-client
encoding and formatting were most of the cost of one door event
(bench/sse_fanout.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event

from mamaroom.logs import get_logger

log = get_logger(__name__)

#: (SSE event name, data, the event's whole SSE frame); None ends the stream.
Event = tuple[str, Any, bytes] | None
#: Seconds without any event before every client gets a keep-alive comment
#: (as FastAPI's own SSE streams do), so proxies do not drop quiet streams.
KEEPALIVE_S = 15.0


def encode(data: Any) -> str:
    """JSON as FastAPI's SSE encoding writes it (pydantic models included)."""
    if hasattr(data, "model_dump_json"):
        return str(data.model_dump_json())
    return json.dumps(jsonable_encoder(data))


def frame(event: str, data: Any, *, retry: int | None = None) -> bytes:
    """One SSE frame, in the wire format of FastAPI's `ServerSentEvent`."""
    return format_sse_event(event=event, data_str=encode(data), retry=retry)


class Fanout:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._clients: set[asyncio.Queue[Event]] = set()
        self._staff: set[asyncio.Queue[Event]] = set()
        self._last_sent = time.monotonic()  # of the last event to every client

    @contextmanager
    def subscribe(self, *, staff: bool = False) -> Iterator[asyncio.Queue[Event]]:
        """A queue of events; None means this client fell too far behind and
        must reconnect (its stream ends; a browser's EventSource reconnects)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._clients.add(queue)
        if staff:
            self._staff.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)
            self._staff.discard(queue)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def publish(self, event: str, data: Any, *, staff_only: bool = False) -> None:
        if not (self._staff if staff_only else self._clients):
            return
        self._broadcast((event, data, frame(event, data)), staff_only=staff_only)

    def end(self, queue: asyncio.Queue[Event]) -> None:
        """Unsubscribe `queue` now and end its stream (its reader gets None)."""
        self._clients.discard(queue)
        self._staff.discard(queue)
        if queue.full():
            queue.get_nowait()  # make room for the end-of-stream marker
        queue.put_nowait(None)

    async def keepalive(self, every: float = KEEPALIVE_S) -> None:
        """Runs for the server's life: a comment to every client once no event
        has gone out for `every` seconds. One timer for all, not one per client
        and event, which would cost each of thousands of clients on every event."""
        ping = ("ping", None, KEEPALIVE_COMMENT)
        while True:
            wait = self._last_sent + every - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                self._broadcast(ping)

    def _broadcast(self, item: tuple[str, Any, bytes], *, staff_only: bool = False) -> None:
        if not staff_only:
            self._last_sent = time.monotonic()
        targets = list(self._staff if staff_only else self._clients)
        for queue in targets:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.end(queue)
                log.warning("stream client too slow; disconnecting it")
