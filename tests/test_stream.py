"""`GET /api/stream` on the wire: a raw HTTP client against the real server,
so the frames and headers are checked byte for byte, and the fan-out's
bookkeeping (closed and too-slow clients, keep-alive) on its own."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

from mamaroom.config import Settings
from server.app import create_app
from server.services.fanout import Fanout
from tests.support import DeviceFactory, Mosquitto, Services, wait_for


class RawStream:
    """An HTTP/1.1 client of /api/stream on a plain socket: headers, then the
    de-chunked body as SSE frames."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:  # before connect, so the TCP window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(15)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            b"GET /api/stream HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.raw = b""
        self.body = b""
        self.ended = False
        self.status = 0
        self.headers: dict[str, str] = {}

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.raw += chunk

    def read_headers(self) -> None:
        while b"\r\n\r\n" not in self.raw:
            self._read()
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status.split()[1])
        self.headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}

    def _dechunk(self) -> None:
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                self.ended = True
            self.body += rest[:size]
            self.raw = rest[size + 2 :]

    def frame(self) -> bytes:
        """The next whole SSE frame, with its blank-line terminator; comments
        (the keep-alive `: ping`, which may come at any time) skipped."""
        while True:
            # What came with the headers is de-chunked before waiting for more:
            # otherwise a frame already here waits for the next keep-alive.
            self._dechunk()
            while b"\n\n" not in self.body:
                if self.ended:
                    raise EOFError("stream ended")
                self._read()
                self._dechunk()
            frame, self.body = self.body.split(b"\n\n", 1)
            if not frame.startswith(b":"):
                return frame + b"\n\n"

    def read_to_end(self) -> None:
        self._dechunk()
        while not self.ended:
            self._read()
            self._dechunk()

    def close(self) -> None:
        self.sock.close()


def stream_clients(services: Services) -> float:
    text = services.http.get("/metrics").text
    return float(
        next(
            line.split()[1]
            for line in text.splitlines()
            if line.startswith("mamaroom_stream_clients ")
        )
    )


def test_frames_and_headers_on_the_wire(services: Services, device_factory: DeviceFactory) -> None:
    client = RawStream(services.http_port)
    try:
        client.read_headers()
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert client.headers["cache-control"] == "no-cache"
        assert client.headers["x-accel-buffering"] == "no"  # nginx must not buffer it
        assert client.headers["transfer-encoding"] == "chunked"
        assert client.headers["x-content-type-options"] == "nosniff"  # security headers too
        assert "frame-ancestors 'none'" in client.headers["content-security-policy"]
        snapshot = client.frame().decode()
        event, data, retry, end = snapshot.split("\n", 3)
        assert (event, retry, end) == ("event: snapshot", "retry: 3000", "\n")
        assert json.loads(data.removeprefix("data: ")) == services.http.get("/api/rooms").json()

        device_factory("dev-a").occupancy(True)
        frame = client.frame()
        # One room's JSON, exactly as GET /api/rooms/{id} encodes it.
        room = services.http.get("/api/rooms/T1-0101").content
        assert frame == b"event: room\ndata: " + room + b"\n\n"
        assert json.loads(room)["state"] == "occupied"
    finally:
        client.close()


def test_closed_streams_are_unsubscribed(services: Services) -> None:
    before = stream_clients(services)
    clients = [RawStream(services.http_port) for _ in range(5)]
    for c in clients:
        c.read_headers()
        assert c.frame().startswith(b"event: snapshot\n")
    assert stream_clients(services) == before + 5
    for c in clients:
        c.close()
    wait_for(
        lambda: stream_clients(services) == before, timeout=15, what="closed streams unsubscribed"
    )


def test_a_client_too_slow_is_disconnected(
    broker: Mosquitto, tmp_path: Path, device_factory: DeviceFactory
) -> None:
    """A client that stops reading is dropped once `server.stream_queue`
    events wait for it, and its stream ends (a browser reconnects and resyncs)
    instead of the server buffering for it without end."""
    # A room of ~40 KB of JSON, so that a few hundred events fill the socket
    # buffers between server and client (megabytes on loopback).
    amenities = ";".join(f"amenity {i}" for i in range(3000))
    csv = tmp_path / "rooms.csv"
    csv.write_text(
        "room_id,name,name_en,building,building_en,floor,device,amenities\n"
        f"T1-0101,测试楼1层母婴室,Test Bldg 1F,测试楼,Test Bldg,1,dev-a,{amenities}\n",
        encoding="utf-8",
    )
    svc = Services(broker, tmp_path, csv, MAMAROOM_SERVER__STREAM_QUEUE="10").start()
    slow = RawStream(svc.http_port, rcvbuf=4096)
    try:
        dev = device_factory("dev-a")
        occupied = False
        deadline = time.monotonic() + 120
        # Until the socket buffers are full and ten more events wait in the queue.
        while "stream client too slow" not in svc.server.log():
            assert time.monotonic() < deadline, "the slow client was never dropped"
            for _ in range(20):
                occupied = not occupied
                dev.occupancy(occupied)
        slow.read_headers()
        slow.read_to_end()  # the chunked body's last chunk: the response is over
        assert slow.body.startswith(b"event: snapshot\n")
    finally:
        slow.close()
        svc.stop()


def test_the_stream_is_documented_as_fastapi_documents_sse() -> None:
    """/api/stream is not FastAPI's own SSE generator (see RoomStream), but its
    OpenAPI entry must stay what FastAPI writes for one."""
    reference = FastAPI()

    @reference.get("/stream", response_class=EventSourceResponse)
    async def stream() -> Any:
        yield ServerSentEvent(event="x")

    def ok(spec: dict[str, Any], path: str) -> Any:
        return spec["paths"][path]["get"]["responses"]["200"]

    assert ok(create_app(Settings()).openapi(), "/api/stream") == ok(reference.openapi(), "/stream")


async def test_slow_queues_end_and_quiet_streams_get_a_keepalive() -> None:
    fanout = Fanout(queue_size=10)
    with fanout.subscribe() as slow, fanout.subscribe() as reader:
        for i in range(11):
            fanout.publish("room", {"n": i})
            reader.get_nowait()
        # Full: the oldest dropped for the end marker, and no longer subscribed.
        queued = [slow.get_nowait() for _ in range(slow.qsize())]
        assert len(queued) == 10 and queued[-1] is None
        assert fanout.client_count == 1
        assert reader.empty()

        keepalive = asyncio.create_task(fanout.keepalive(every=0.05))
        try:
            item = await asyncio.wait_for(reader.get(), 5)
            assert item == ("ping", None, b": ping\n\n")
            fanout.publish("room", {"n": 11})
            item = await asyncio.wait_for(reader.get(), 5)
            assert item is not None and item[2] == b'event: room\ndata: {"n": 11}\n\n'
        finally:
            keepalive.cancel()
