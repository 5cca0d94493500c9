"""Fan-out of live events to stream clients, each with a bounded queue.

An event is encoded to JSON once, here, not once per client: with thousands
of phones on the mothers' page, encoding per client was most of the cost of
one door event (bench/sse_fanout.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.encoders import jsonable_encoder

from mamaroom.logs import get_logger

log = get_logger(__name__)

#: (SSE event name, data, data as JSON); None ends the stream.
Event = tuple[str, Any, str] | None


def encode(data: Any) -> str:
    """JSON as FastAPI's SSE encoding writes it (pydantic models included)."""
    if hasattr(data, "model_dump_json"):
        return str(data.model_dump_json())
    return json.dumps(jsonable_encoder(data))


class Fanout:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._clients: set[asyncio.Queue[Event]] = set()
        self._staff: set[asyncio.Queue[Event]] = set()

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
        targets = list(self._staff if staff_only else self._clients)
        if not targets:
            return
        item = (event, data, encode(data))
        for queue in targets:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self._clients.discard(queue)
                self._staff.discard(queue)
                queue.get_nowait()  # make room for the end-of-stream marker
                queue.put_nowait(None)
                log.warning("stream client too slow; disconnecting it")
