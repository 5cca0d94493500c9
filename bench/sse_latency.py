"""Door event to phone: occupancy published → change on an SSE client.

Each change is published by a device stand-in (QoS 1) and timed until the
matching `event: room` arrives on a real HTTP client of /api/stream, one change
at a time. Baseline, same run, same broker: raw MQTT publish → subscribe.

    python -m bench.sse_latency [--changes 1000]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.ingest import machine
from tests.support import Device, Mosquitto, Services, sse_events, write_rooms_csv

console = Console()
ROOMS = 10


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50": s[len(s) // 2],
        "p99": s[min(len(s) - 1, int(len(s) * 0.99))],
        "mean": statistics.fmean(s),
        "max": s[-1],
    }


def broker_baseline(port: int, n: int) -> list[float]:
    got: queue.Queue[float] = queue.Queue()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = lambda *_: got.put(time.perf_counter())
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/latency", 1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.5)  # subscription settles (a benchmark, not a test)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        pub.publish("bench/latency", b"x", qos=1)
        out.append(got.get(timeout=10) - t0)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return out


def sse_changes(svc: Services, devices: list[Device], n: int) -> tuple[list[float], int]:  # noqa: C901 (one SSE parser loop)
    events: queue.Queue[tuple[float, str, str]] = queue.Queue()
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        try:
            read_stream()
        except httpx.HTTPError:
            if not stop.is_set():  # the server going away at the end is expected
                raise

    def read_stream() -> None:
        for kind, data in sse_events(f"{svc.base_url}/api/stream", timeout=None):
            if stop.is_set():
                return
            if kind == "snapshot":
                ready.set()
            elif kind == "room":
                events.put((time.perf_counter(), data["id"], data["state"]))

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(30)
    latencies, failures = [], 0
    state = dict.fromkeys(range(len(devices)), False)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("door events → SSE", total=n)
        for i in range(n):
            k = i % len(devices)
            state[k] = not state[k]
            room, want = f"BR-{k:02d}", "occupied" if state[k] else "free"
            t0 = time.perf_counter()
            devices[k].occupancy(state[k])
            deadline = t0 + 10
            while True:
                try:
                    t, rid, st = events.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    failures += 1
                    break
                if rid == room and st == want:
                    latencies.append(t - t0)
                    break
            bar.update(task, advance=1)
    stop.set()
    return latencies, failures


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sse_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--changes", type=int, default=1000, help="changes timed (default 1000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-") as tmp:
        root = Path(tmp)
        csv = write_rooms_csv(
            root / "rooms.csv", [(f"BR-{k:02d}", f"bench-{k:02d}") for k in range(ROOMS)]
        )
        broker = Mosquitto(root / "broker").start()
        svc = Services(broker, root, csv, MAMAROOM_LOG__LEVEL="warning")
        devices: list[Device] = []
        try:
            svc.start()
            devices = [Device(broker.port, f"bench-{k:02d}") for k in range(ROOMS)]
            baseline = broker_baseline(broker.port, args.changes)
            system, failures = sse_changes(svc, devices, args.changes)
        finally:
            for d in devices:
                d.close()
            svc.stop()
            broker.stop()
    b, s = percentiles(baseline), percentiles(system)
    table = Table(title=f"Door event → SSE client, {args.changes} changes (ms)")
    for col in ("path", "p50", "p99", "mean", "max"):
        table.add_column(col)
    for name, p in (
        ("broker publish → subscribe (baseline)", b),
        ("occupancy → gateway → server → SSE", s),
    ):
        table.add_row(name, *(f"{p[k] * 1000:.2f}" for k in ("p50", "p99", "mean", "max")))
    console.print(table)
    console.print(
        f"ratio to baseline: p50 ×{s['p50'] / b['p50']:.1f}, "
        f"p99 ×{s['p99'] / b['p99']:.1f}; failures {failures}; machine: {machine()}"
    )
    return "\n".join(
        [
            "## Door event → SSE latency",
            "",
            f"Machine: {machine()}. {args.changes} occupancy changes, one at a time, each "
            "timed from publish (QoS 1) to the matching `event: room` on a real HTTP client.",
            "",
            "| path | p50 ms | p99 ms | mean ms | p50 ratio | p99 ratio |",
            "|---|---|---|---|---|---|",
            f"| broker publish → subscribe (baseline) | {b['p50'] * 1000:.2f} | "
            f"{b['p99'] * 1000:.2f} | {b['mean'] * 1000:.2f} | 1 | 1 |",
            f"| occupancy → gateway → server → SSE | {s['p50'] * 1000:.2f} | "
            f"{s['p99'] * 1000:.2f} | {s['mean'] * 1000:.2f} | {s['p50'] / b['p50']:.1f} | "
            f"{s['p99'] / b['p99']:.1f} |",
            "",
            f"Changes that did not arrive within 10 s: {failures}.",
            "",
        ]
    )


if __name__ == "__main__":
    print(main())
