"""Emergency call latency: `call press` published →
(a) `call_ack received` at the node, (b) `event: alert` on a staff SSE client,
(c) the ESPA block complete on the serial line (a pty to a paging-system
peer that acknowledges at once), with the 190-room simulation running.
Baseline, same run, same broker: raw MQTT publish → subscribe.

    python -m bench.call_latency [--calls 1000]
"""

from __future__ import annotations

import argparse
import functools
import os
import queue
import select
import tempfile
import threading
import time
import tty
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.ingest import machine
from bench.sse_latency import broker_baseline, percentiles
from mamaroom.config import PROJECT_ROOT
from mamaroom.registry import read_rooms_csv
from tests.support import Device, Mosquitto, Proc, Services, sse_events, wait_for

console = Console()


def paging_peer(fd: int, blocks: queue.Queue[float], stop: threading.Event) -> None:
    """ACK the selection and every block; note when each block's BCC arrived."""
    buf = bytearray()
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        buf += os.read(fd, 4096)
        while True:
            if buf.startswith(b"\x04"):
                del buf[:1]
            elif buf.startswith(b"1\x052\x05"):
                del buf[:4]
                os.write(fd, b"\x06")
            elif buf.startswith(b"\x01") and b"\x03" in buf and len(buf) > buf.index(b"\x03") + 1:
                del buf[: buf.index(b"\x03") + 2]
                blocks.put(time.perf_counter())
                os.write(fd, b"\x06")
            else:
                break


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.call_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls timed (default 1000)")
    parser.add_argument("--rooms", type=int, default=190, help="simulated rooms running")
    args = parser.parse_args(argv)
    acks, alerts, blocks = [], [], []
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-") as tmp:
        root = Path(tmp)
        master, slave = os.openpty()
        tty.setraw(master)
        broker = Mosquitto(root / "broker").start()
        svc = Services(
            broker,
            root,
            PROJECT_ROOT / "site" / "rooms.csv",
            MAMAROOM_LOG__LEVEL="warning",
            MAMAROOM_PAGING__ESPA__PORT=os.ttyname(slave),
            MAMAROOM_PAGING__ESPA__BAUD="115200",
            MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "pagers": ["100"]}]',
        )
        # The last room's node is the one that calls; the others are simulated.
        device = read_rooms_csv(PROJECT_ROOT / "site" / "rooms.csv")[args.rooms - 1].device
        assert device is not None
        sim = Proc(
            "simulate",
            ["simulate", "--rooms", str(args.rooms - 1), "--speed", "20"],
            {**svc.env, "MAMAROOM_LOG__LEVEL": "warning"},
            root,
        )
        stop = threading.Event()
        block_times: queue.Queue[float] = queue.Queue()
        threading.Thread(target=paging_peer, args=(master, block_times, stop), daemon=True).start()
        try:
            svc.start()
            sim.start()
            node = Device(broker.port, device)
            baseline = broker_baseline(broker.port, args.calls)
            token = svc.login("admin", Services.ADMIN_PASSWORD)
            alert_times: queue.Queue[tuple[float, str]] = queue.Queue()

            def staff_stream() -> None:
                for event, a in sse_events(
                    f"{svc.base_url}/api/stream",
                    timeout=None,
                    headers={"Authorization": f"Bearer {token}"},
                ):
                    if stop.is_set():
                        return
                    if event == "alert" and a["status"] == "open":
                        alert_times.put((time.perf_counter(), a["call_id"]))

            threading.Thread(target=staff_stream, daemon=True).start()
            time.sleep(1)  # the stream is open (a benchmark, not a test)
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("calls", total=args.calls)
                for i in range(args.calls):
                    call_id = f"bench-{i}"
                    t0 = time.perf_counter()
                    node.call("press", call_id)
                    wait_for(
                        functools.partial(lambda c: "received" in node.statuses(c), call_id),
                        timeout=10,
                        interval=0.0005,
                        what="received",
                    )
                    acks.append(time.perf_counter() - t0)
                    t, cid = alert_times.get(timeout=10)
                    while cid != call_id:
                        t, cid = alert_times.get(timeout=10)
                    alerts.append(t - t0)
                    blocks.append(block_times.get(timeout=10) - t0)
                    node.call("reset", call_id)  # close it, so the next one is fresh
                    bar.update(task, advance=1)
        finally:
            stop.set()
            sim.stop()
            svc.stop()
            broker.stop()
            os.close(master)
            os.close(slave)
    b = percentiles(baseline)
    rows = [
        ("broker publish → subscribe (baseline)", b),
        ("(a) press → call_ack received at the node", percentiles(acks)),
        ("(b) press → event: alert on the staff stream", percentiles(alerts)),
        ("(c) press → ESPA block on the line (115200 baud)", percentiles(blocks)),
    ]
    table = Table(
        title=f"Emergency call latency, {args.calls} calls, {args.rooms} rooms simulated (ms)"
    )
    for col in ("path", "p50", "p99", "p99 ratio"):
        table.add_column(col)
    for name, p in rows:
        table.add_row(
            name, f"{p['p50'] * 1000:.2f}", f"{p['p99'] * 1000:.2f}", f"{p['p99'] / b['p99']:.0f}"
        )
    console.print(table)
    console.print(f"machine: {machine()}")
    return "\n".join(
        [
            "## Emergency call latency",
            "",
            f"Machine: {machine()}. {args.calls} calls from one node while {args.rooms - 1} "
            "simulated rooms run beside it; the ESPA peer on a pty acknowledges at once.",
            "",
            "| path | p50 ms | p99 ms | p99 ratio to baseline |",
            "|---|---|---|---|",
            *[
                f"| {n} | {p['p50'] * 1000:.2f} | {p['p99'] * 1000:.2f} "
                f"| {p['p99'] / b['p99']:.0f} |"
                for n, p in rows
            ],
            "",
        ]
    )


if __name__ == "__main__":
    print(main())
