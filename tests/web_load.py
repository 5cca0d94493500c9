"""Hostile web clients for tests and benchmarks: a login storm from many
client addresses, and a flood of held / half-sent connections.

Every 127.x.y.z address reaches the loopback interface on Linux, so binding
the client side to a different one makes each worker a different client
address for the server's per-address limits."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx


def client_address(i: int, net: int = 1) -> str:
    """The i-th loopback client address of block `net` (127.net.x.y)."""
    return f"127.{net}.{1 + i // 250}.{1 + i % 250}"


STATUSES = (0, 200, 401, 429, 503)


class LoginStorm:
    """`workers` clients, each from its own address, trying wrong passwords
    back to back (after a 429 or 503: its Retry-After, at most `max_pause_s`)
    until stopped. `counts` has the responses by status code (0: no answer).

    In a process of its own, so the clients' work does not take the GIL from
    the test's own simulated node, whose timing a benchmark measures."""

    def __init__(
        self, base_url: str, workers: int = 300, net: int = 1, max_pause_s: float = 1.0
    ) -> None:
        self.base_url = base_url
        self.workers = workers
        self.net = net
        self.max_pause_s = max_pause_s
        ctx = multiprocessing.get_context("spawn")
        self._counts = ctx.Array("q", len(STATUSES) + 1, lock=False)
        self._stop = ctx.Event()
        #: Set once every worker has had its first answer.
        self.warm = ctx.Event()
        self._proc = ctx.Process(
            target=_storm,
            daemon=True,
            args=(base_url, workers, net, max_pause_s, self._counts, self._stop, self.warm),
        )

    @property
    def counts(self) -> Counter[int]:
        return Counter(
            {code: self._counts[i] for i, code in enumerate(STATUSES) if self._counts[i]}
            | ({-1: self._counts[-1]} if self._counts[-1] else {})
        )

    def __enter__(self) -> LoginStorm:
        self._proc.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()


def _storm(
    base_url: str, workers: int, net: int, max_pause_s: float, counts: Any, stop: Any, warm: Any
) -> None:
    answered = 0

    def count(code: int) -> None:
        counts[STATUSES.index(code) if code in STATUSES else -1] += 1

    async def worker(i: int) -> None:
        nonlocal answered
        transport = httpx.AsyncHTTPTransport(local_address=client_address(i, net))
        first = True
        async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as client:
            while not stop.is_set():
                name = f"storm-{uuid.uuid4().hex[:10]}"
                pause = 0.0
                try:
                    r = await client.post(
                        "/api/auth/token", data={"username": name, "password": "wrong-" + name}
                    )
                    count(r.status_code)
                    if r.status_code in (429, 503):
                        pause = min(max_pause_s, float(r.headers.get("retry-after", 1)))
                except httpx.HTTPError:
                    count(0)
                    pause = 0.2
                if first:
                    first = False
                    answered += 1
                    if answered == workers:
                        warm.set()
                if pause:
                    await asyncio.sleep(pause)

    async def run() -> None:
        await asyncio.gather(*(worker(i) for i in range(workers)))

    asyncio.run(run())


async def concurrent_logins(
    base_url: str, n: int, user: str, password: str, address: str
) -> Counter[int]:
    """`n` login tries for `user` at once from `address`: status codes."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=limits)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60) as c:
        gate = asyncio.Event()

        async def one() -> int:
            await gate.wait()
            try:
                r = await c.post("/api/auth/token", data={"username": user, "password": password})
                return r.status_code
            except httpx.HTTPError:
                return 0

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0)
        gate.set()
        return Counter(await asyncio.gather(*tasks))


class ConnectionFlood:
    """`n` TCP connections to `port`, opened from `addresses` client addresses
    and held: a third stay silent, a third send half a request and then a
    header byte every second (slowloris), a third open the public live stream
    (a complete request whose response never ends)."""

    KINDS = ("silent", "slowloris", "stream")

    def __init__(self, port: int, n: int = 2000, addresses: int = 20, net: int = 2) -> None:
        self.port = port
        self.n = n
        self.addresses = addresses
        self.net = net
        self.socks: list[tuple[str, socket.socket]] = []
        self.connect_failures = 0
        self.received: dict[int, bytearray] = {}
        self.closed: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dribbler = threading.Thread(target=self._dribble, daemon=True)

    def _open(self, i: int) -> None:
        kind = self.KINDS[i % 3]
        try:
            s = socket.create_connection(
                ("127.0.0.1", self.port),
                timeout=10,
                source_address=(client_address(i % self.addresses, self.net), 0),
            )
            if kind == "slowloris":
                s.sendall(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n")
            elif kind == "stream":
                s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            s.setblocking(False)
        except OSError:
            with self._lock:
                self.connect_failures += 1
            return
        with self._lock:
            self.socks.append((kind, s))

    def _dribble(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                held = list(self.socks)
            for kind, s in held:
                if kind == "slowloris":
                    with contextlib.suppress(OSError):
                        s.send(b"X")

    def __enter__(self) -> ConnectionFlood:
        with ThreadPoolExecutor(max_workers=50) as pool:
            list(pool.map(self._open, range(self.n)))
        self._dribbler.start()
        return self

    def poll(self) -> Counter[str]:
        """Read what the server sent; counts of sockets by what happened:
        `refused` (got a 503), `closed` (closed by the server), `<kind> open`."""
        out: Counter[str] = Counter()
        for entry in self.socks:
            kind, s = entry
            got = self.received.setdefault(id(s), bytearray())
            if id(s) not in self.closed:
                try:
                    while data := s.recv(65536):
                        got += data
                    self.closed.add(id(s))
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed.add(id(s))
            if got.startswith(b"HTTP/1.1 503"):
                out["refused"] += 1
            if id(s) in self.closed:
                out["closed"] += 1
            else:
                out[f"{kind} open"] += 1
        return out

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._dribbler.join(timeout=10)
        for _kind, s in self.socks:
            s.close()
