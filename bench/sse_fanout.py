"""SSE fan-out: one door event to 5,000 phones with the page open.

5,000 clients hold /api/stream open (plain asyncio sockets, spread over a few
listener processes so the listeners are not what is measured); a device
stand-in publishes an occupancy change and every listener notes when the
matching `event: room` reaches each of its clients. The figure is the time
until the LAST client has it (target ≤ 1 s), beside the same run's baseline:
the same change with one client connected.

    python -m bench.sse_fanout [--clients 5000] [--changes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

import psutil
from rich.console import Console

from bench.ingest import cpu_s, machine
from tests.support import Device, Mosquitto, Services, write_rooms_csv

console = Console()
ROOM, DEVICE = "FO-01", "fanout-01"


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


class Arrivals:
    """Arrival times per expected marker, with an event once all clients have it."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.ready = 0
        self.all_ready = asyncio.Event()
        self.times: dict[bytes, list[float]] = {}
        self.done: dict[bytes, asyncio.Event] = {}

    def expect(self, marker: bytes) -> None:
        self.times[marker] = []
        self.done[marker] = asyncio.Event()

    def connected(self) -> None:
        self.ready += 1
        if self.ready == self.clients:
            self.all_ready.set()

    def arrived(self, event: bytes, now: float) -> None:
        for marker, times in self.times.items():
            if marker in event:
                times.append(now)
                if len(times) == self.clients:
                    self.done[marker].set()


async def _client(port: int, arrivals: Arrivals, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    buf = b""
    seen_snapshot = False
    while not stop.is_set():
        chunk = await reader.read(65536)
        if not chunk:
            break
        now = time.time()  # wall clock: comparable across the listener processes
        buf += chunk
        if not seen_snapshot and b"event: snapshot" in buf:
            seen_snapshot = True
            arrivals.connected()
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if b"event: room" in event:
                arrivals.arrived(event, now)
    writer.close()


def _listener(port: int, n: int, conn: Connection) -> None:
    """One process with `n` stream clients; reports arrival times per change."""
    raise_fd_limit(n + 100)

    async def run() -> None:
        arrivals = Arrivals(n)
        stop = asyncio.Event()
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(_client(port, arrivals, stop)))
            if i % 200 == 199:  # a ramp: the server's accept backlog is finite
                await asyncio.sleep(0.05)
        await asyncio.wait_for(arrivals.all_ready.wait(), 300)
        conn.send(("ready", n))
        loop = asyncio.get_running_loop()
        cpu0 = 0.0
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg[0] == "expect":
                arrivals.expect(msg[1].encode())
                cpu0 = time.process_time()
            elif msg[0] == "collect":
                marker = msg[1].encode()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrivals.done[marker].wait(), 15)
                # CPU this listener spent on the change: shows whether the
                # listeners, on the same cores as the server, are what is slow.
                conn.send(("times", list(arrivals.times[marker]), time.process_time() - cpu0))
            elif msg[0] == "stop":
                stop.set()
                for t in tasks:
                    t.cancel()
                return

    asyncio.run(run())


class Change(NamedTuple):
    last: float  # s from the publish until the last client had it
    median: float  # s until the median client had it
    reached: int  # clients that had it
    server_cpu: float  # s of CPU the server process spent meanwhile
    listeners_cpu: float  # s of CPU of all listener processes together


def fan_out(svc: Services, device: Device, clients: int, changes: int, procs: int) -> list[Change]:
    """Per change: when the clients had it, and the CPU it cost."""
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    pipes = []
    workers = []
    ctx = mp.get_context("spawn")
    for n in per:
        if n == 0:
            continue
        parent, child = ctx.Pipe()
        w = ctx.Process(target=_listener, args=(svc.http_port, n, child), daemon=True)
        w.start()
        pipes.append(parent)
        workers.append(w)
    for p in pipes:
        if not p.poll(300):
            raise RuntimeError("stream clients did not connect within 300 s")
        assert p.recv()[0] == "ready"
    out = []
    assert svc.server.proc is not None
    server = psutil.Process(svc.server.proc.pid)
    occupied = svc.room(ROOM)["state"] == "occupied"
    try:
        for _ in range(changes):
            occupied = not occupied
            # One room, so the new state in an `event: room` is the marker.
            marker = f'"state":"{"occupied" if occupied else "free"}"'
            for p in pipes:
                p.send(("expect", marker))
            time.sleep(0.2)  # the listeners have registered it (a benchmark, not a test)
            cpu0 = cpu_s(server)
            t0 = time.time()
            device.occupancy(occupied)
            svc.wait_room_state(ROOM, "occupied" if occupied else "free")
            arrivals: list[float] = []
            listeners_cpu = 0.0
            for p in pipes:
                p.send(("collect", marker))
            for p in pipes:
                _, times, cpu = p.recv()
                arrivals += times
                listeners_cpu += cpu
            lat = sorted(a - t0 for a in arrivals)
            out.append(
                Change(
                    lat[-1] if lat else float("inf"),
                    lat[len(lat) // 2] if lat else float("inf"),
                    len(lat),
                    cpu_s(server) - cpu0,
                    listeners_cpu,
                )
            )
    finally:
        for p in pipes:
            p.send(("stop",))
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sse_fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=5000, help="stream clients (5000)")
    parser.add_argument("--changes", type=int, default=10, help="changes timed (10)")
    parser.add_argument("--procs", type=int, default=4, help="listener processes (4)")
    args = parser.parse_args(argv)
    raise_fd_limit(args.clients + 1000)  # the server process inherits it
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-") as tmp:
        root = Path(tmp)
        csv = write_rooms_csv(root / "rooms.csv", [(ROOM, DEVICE)])
        broker = Mosquitto(root / "broker").start()
        svc = Services(broker, root, csv, MAMAROOM_LOG__LEVEL="warning")
        device = None
        try:
            svc.start()
            device = Device(broker.port, DEVICE)
            device.occupancy(occupied=False)
            svc.wait_room_state(ROOM, "free")
            console.print("baseline: 1 stream client")
            base = fan_out(svc, device, 1, args.changes, 1)
            console.print(f"{args.clients} stream clients in {args.procs} listener processes")
            many = fan_out(svc, device, args.clients, args.changes, args.procs)
        finally:
            if device:
                device.close()
            svc.stop()
            broker.stop()

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    b_last = ms([c.last for c in base])
    m_last = ms([c.last for c in many])
    m_worst = max(c.last for c in many) * 1000
    reached = min(c.reached for c in many)
    console.print(
        f"one client: {b_last:.1f} ms; {args.clients} clients: last "
        f"{m_last:.0f} ms (median of {args.changes}), worst "
        f"{m_worst:.0f} ms, ratio ×{m_last / b_last:.0f}; fewest reached "
        f"{reached}/{args.clients}; CPU per change: server "
        f"{ms([c.server_cpu for c in many]):.0f} ms, listeners "
        f"{ms([c.listeners_cpu for c in many]):.0f} ms"
    )

    def row(name: str, changes: list[Change], ratio: str) -> str:
        return (
            f"| {name} | {ms([c.last for c in changes]):.1f} | "
            f"{max(c.last for c in changes) * 1000:.1f} | "
            f"{ms([c.median for c in changes]):.1f} | {ratio} | "
            f"{ms([c.server_cpu for c in changes]):.0f} | "
            f"{ms([c.listeners_cpu for c in changes]):.0f} |"
        )

    return "\n".join(
        [
            "## SSE fan-out",
            "",
            f"Machine: {machine()}. One occupancy change published while {args.clients} clients "
            "hold `/api/stream` open (raw sockets in "
            f"{args.procs} listener processes); timed from the publish to the moment the last "
            f"client has the `event: room`. {args.changes} changes; baseline: the same with one "
            "client, same run. CPU per change: of the server process, and of all listener "
            "processes together (on the same cores; medians; the server's in 10 ms ticks).",
            "",
            "| clients | to the last client, median ms | worst ms | median client ms | ratio "
            "| server CPU ms | listeners CPU ms |",
            "|---|---|---|---|---|---|---|",
            row("1 (baseline)", base, "1"),
            row(str(args.clients), many, f"{m_last / b_last:.0f}"),
            "",
            f"Target: ≤ 1,000 ms to the last client. Fewest clients reached in a change: "
            f"{reached} of {args.clients}.",
            "",
        ]
    )


if __name__ == "__main__":
    print(main())
