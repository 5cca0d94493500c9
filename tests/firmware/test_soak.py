"""Node time, accelerated: the whole node on the unix port with
MAMAROOM_TICKS_FAST (firmware/ticks.py), where its event loop skips the idle
waits between its steps, so days of node time pass in minutes; every task
still takes every step it would on a board, in the same order. Against a
real Mosquitto, with the room driven all along (door, radar, calls, junk
commands, a nightly still "ghost" past the stuck timeout, a broker restart),
starting days below the ESP32's tick wrap so that the wrap comes mid-run.

`make test` runs three hours of node time; `make soak` a week, and prints its
figures (docs/firmware.md, "An accelerated week"). What must hold: the heap
flat (allocated after a collection within 2 KB of where it settled, at
least 4 KB free all along), no task restarted, no memory error, every
telemetry message there (one a minute), uptime counted right across the
wrap, seq strictly increasing, still_s never negative, every call
delivered and closed."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.firmware.nodes import Node, Server, seqs_increase
from tests.support import Mosquitto, wait_for

NodeFactory = Callable[..., Node]
PERIOD = 1 << 30  # the ESP32's ticks period, ms
HOUR = 3600
DAY = 24 * HOUR
STEP = 600  # node seconds between two looks at the node (and changes in the room)
GROWTH_BOUND = 2048  # as tests/firmware/test_heap.py


@dataclass
class Run:
    """What the run saw: samples of (node s, allocated, free, largest free
    block), the node's clock unwrapped, and counts."""

    samples: list[tuple[int, int, int, int]] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    calls: int = 0
    real_s: float = 0.0


def uptime(node: Node) -> int:
    return int(node.ctl("uptime?").split()[1])


def ticks(node: Node) -> int:
    return int(node.ctl("ticks?").split()[1])


def a_whole_call(node: Node, server: Server) -> None:
    """Press; the server's statuses; the staff key twice: over, lamp off."""
    dev = node.device
    known = {m["call_id"] for m in server.of(dev, "call")}
    node.press()
    press = server.wait(
        dev,
        "call",
        lambda m: m["action"] == "press" and m["call_id"] not in known,
        timeout=60,
        detail=node.log_tail,
    )
    call_id = press["call_id"]
    for status in ("received", "acknowledged"):
        server.call_ack(dev, call_id, status)
    wait_for(lambda: node.lamp() == "steady", timeout=60, what="lamp steady", detail=node.log_tail)
    assert node.ctl("staff") == "ok"
    server.wait(
        dev,
        "call",
        lambda m: m["action"] == "presence" and m["call_id"] == call_id,
        timeout=60,
        detail=node.log_tail,
    )
    server.call_ack(dev, call_id, "arrived")
    assert node.ctl("staff") == "ok"
    server.wait(
        dev,
        "call",
        lambda m: m["action"] == "reset" and m["call_id"] == call_id,
        timeout=60,
        detail=node.log_tail,
    )
    server.call_ack(dev, call_id, "resolved")
    wait_for(lambda: node.lamp() == "off", timeout=60, what="lamp off", detail=node.log_tail)


def drive(
    node: Node,
    server: Server,
    broker: Mosquitto,
    seconds: int,
    call_every: int,
    ghost: tuple[int, int] = (1, 6),
    restart_at: int | None = None,
) -> Run:
    """The room for `seconds` of node time, looked at every STEP node
    seconds: a heap sample, the door and the radar changed now and then, a
    still target held through the `ghost` hours of every node day (01:00 to
    06:00: a ghost past the 4 h stuck timeout), a whole call every
    `call_every` s, junk on `cmd`, the broker restarted once at `restart_at`."""
    dev = node.device
    rng = random.Random(13)
    run = Run()
    t0 = time.monotonic()
    at = uptime(node)
    next_call = at + call_every // 2
    while at < seconds:
        at = wait_for(
            lambda: (u := uptime(node)) >= at + STEP and u,  # noqa: B023 (polled before the loop moves on)
            timeout=120,
            what="node time moving on",
            detail=node.log_tail,
        )
        run.samples.append((at, *node.heap()))
        run.ticks.append(ticks(node))
        hour = at % DAY // HOUR
        if ghost[0] <= hour < ghost[1]:
            node.ctl("radar still 140")  # the ghost: still, never moving
        elif rng.random() < 0.3:
            node.ctl(
                f"radar {rng.choice(['none', 'moving', 'still', 'both'])} {rng.randint(30, 500)}"
            )
        if rng.random() < 0.2:
            node.ctl(rng.choice(["door locked", "door unlocked"]))
        if rng.random() < 0.05:
            server.cmd(dev, rng.choice([b"junk", b"{}", b'{"cmd":"identify","seconds":5}']))
        if restart_at is not None and at >= restart_at:
            restart_at = None
            broker.restart()  # no persistence: the node's session is gone with it
        if at >= next_call:
            next_call = at + call_every
            a_whole_call(node, server)
            run.calls += 1
        assert node.alive(), node.log_tail()
    run.real_s = time.monotonic() - t0
    return run


def unwrapped(ticks: list[int]) -> list[int]:
    out, base = [], 0
    for prev, t in zip([ticks[0], *ticks], ticks, strict=False):
        if t < prev - PERIOD // 2:
            base += PERIOD
        out.append(base + t)
    return out


def check(node: Node, server: Server, run: Run, seconds: int) -> dict[str, Any]:
    """Everything the run must show, and its figures."""
    dev = node.device
    assert node.alive() and not node.logged("Traceback"), node.log_tail()
    assert (
        not node.logged("MemoryError")
        and not node.logged("failed; starting it again")
        and not node.logged("stalled")
    ), node.log_tail()
    assert server.rejected == []
    # The heap: flat once settled (the first tenth of the run is settling).
    s = run.samples
    tenth = max(len(s) // 10, 1)
    settled = statistics.median(x[1] for x in s[tenth : 2 * tenth + 1])
    late = statistics.median(x[1] for x in s[-tenth:])
    assert late - settled <= GROWTH_BOUND, (settled, late)
    assert min(x[2] for x in s) > 4096, min(x[2] for x in s)
    # The clock across the wrap: it wrapped, and uptime_s is the time that passed.
    t = unwrapped(run.ticks)
    assert t[0] < PERIOD < t[-1], (t[0], t[-1])
    drift = abs((t[-1] - t[0]) / 1000 - (s[-1][0] - s[0][0]))
    assert drift <= 2, drift
    tele = server.of(dev, "telemetry")
    ups = [m["uptime_s"] for m in tele]
    assert ups == sorted(ups) and ups[-1] >= seconds - 120, ups[-5:]
    assert len(tele) >= 0.95 * (ups[-1] - ups[0]) / 60, len(tele)  # one a minute
    assert all(m["restarts"] == 0 for m in tele), tele[-1]
    # The ghost was taken for one (stuck), and the radar counted again once it moved.
    stuck = [m["radar_stuck"] for m in tele]
    assert True in stuck and False in stuck[stuck.index(True) :]
    occ = server.of(dev, "occupancy")
    assert min(m["still_s"] for m in occ) >= 0
    assert seqs_increase(tele) and seqs_increase(occ) and seqs_increase(server.of(dev, "call"))
    presses = {m["call_id"] for m in server.of(dev, "call") if m["action"] == "press"}
    resolved = {
        m["call_id"]
        for m in server.of(dev, "call")
        if m["action"] == "shown" and m["status"] == "resolved"
    }
    assert len(presses) == run.calls and presses == resolved
    return {
        "node_days": round(ups[-1] / DAY, 2),
        "real_min": round(run.real_s / 60, 1),
        "speed": round(ups[-1] / run.real_s),
        "calls": run.calls,
        "telemetry": len(tele),
        "occupancy": len(occ),
        "heap_alloc_settled": settled,
        "heap_alloc_late": late,
        "heap_alloc_max": max(x[1] for x in s),
        "heap_free_min": min(x[2] for x in s),
        "largest_block_min": min(x[3] for x in s),
        "oom_retries": len(node.logged("out of memory")),
        "mqtt_connects": tele[-1]["mqtt_connects"],
        "samples": len(s),
    }


def fast_node(node_factory: NodeFactory, before_wrap_s: int, stuck_s: int = 14400) -> Node:
    """A node with the accelerated clock, the room's own timings (not the
    other tests' short filters), its clock `before_wrap_s` below the wrap."""
    return node_factory(
        env={
            "MAMAROOM_TICKS_FAST": "1",
            "MAMAROOM_TICKS_START": str(PERIOD - before_wrap_s * 1000),
        },
        telemetry_s=60,
        occupancy_s=300,
        filters={"delayed_on_ms": 2000, "delayed_off_ms": 30000, "radar_stuck_s": stuck_s},
    )


def test_three_hours_of_node_time_across_the_wrap(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    # The accelerated clock in `make test` (a minute or so): what `make soak`
    # runs for a week. The ghost from 01:00 to 02:00, the stuck timeout cut
    # to 20 min to see it come and go.
    seconds = 3 * HOUR
    node = fast_node(node_factory, before_wrap_s=HOUR, stuck_s=1200)
    server.wait(node.device, "status", lambda s: s == "online", detail=node.log_tail)
    run = drive(node, server, broker, seconds, call_every=HOUR // 2, ghost=(1, 2))
    figures = check(node, server, run, seconds)
    assert figures["calls"] >= 3, figures


@pytest.mark.soak
@pytest.mark.timeout(4 * 3600)
@pytest.mark.skipif(not os.environ.get("SOAK"), reason="`make soak` runs it")
def test_an_accelerated_week_with_a_flat_heap(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    seconds = 7 * DAY
    node = fast_node(node_factory, before_wrap_s=3 * DAY + 12 * HOUR)  # the wrap mid-week
    server.wait(node.device, "status", lambda s: s == "online", detail=node.log_tail)
    server.client.reconnect_delay_set(min_delay=1, max_delay=1)
    run = drive(node, server, broker, seconds, call_every=2 * HOUR, restart_at=5 * DAY + HOUR)
    figures = check(node, server, run, seconds)
    print("\naccelerated week: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
