"""A busy node in its 72 KB heap keeps a flat heap: calls, acks, door, radar,
junk commands and frequent reports for a minute (in `make test`), or for
30 minutes (`make soak`), losing nothing: at most a rare message waits one
wake for a fragmented heap."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable

import pytest

from tests.firmware.nodes import Node, Server
from tests.support import wait_for

# The heap, after a collection, may not end more than this above where it
# started once the node settled (fragments of the latest messages, a socket
# buffer): a leak of one object per message would pass it within minutes.
GROWTH_BOUND = 2048
# Between cycles. Busy, but a room's pace: a whole call (press, four acks,
# four `shown`) plus a door and a radar change every ~1.5 s, occupancy every
# 2 s, telemetry every 5 s. Flat out (no pause) the 64-bit unix port's 64 KB
# heap fragments until a message does not fit (docs/firmware.md, heap).
PAUSE = 0.5
#: Recovered "publisher: out of memory" retries allowed per busy minute.
RETRIES_PER_MINUTE = 3


def state(node: Node) -> str:
    """What the node says of itself, for a failure's message."""
    try:
        answers = [node.ctl(q) for q in ("lamp?", "buzzer?", "led?", "heap?")]
    except OSError as e:
        answers = [repr(e)]
    return f"alive={node.alive()} {answers}\n{node.log_tail()}"


def busy_run(
    node: Node, server: Server, seconds: float, pause: float = 0.0
) -> list[tuple[float, int, int, int]]:
    """Drive the room for `seconds`, a whole call and a door and radar change
    every cycle, `pause` s between cycles; (time, allocated, free, largest
    free block) samples."""
    dev = node.device
    rng = random.Random(3)
    samples: list[tuple[float, int, int, int]] = []
    t0 = time.monotonic()
    next_sample = 0.0
    calls_done = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        if elapsed >= next_sample:
            samples.append((elapsed, *node.heap()))
            next_sample = elapsed + 1.0
        node.ctl(rng.choice(["door locked", "door unlocked"]))
        node.ctl(f"radar {rng.choice(['none', 'moving', 'still', 'both'])} {rng.randint(30, 500)}")
        if rng.random() < 0.3:
            server.cmd(dev, rng.choice([b"junk", b"{}", b'{"cmd":"identify","seconds":1}']))
        known = {m["call_id"] for m in server.of(dev, "call")}
        node.press()
        call = server.wait(
            dev,
            "call",
            lambda m, k=known: m["action"] == "press" and m["call_id"] not in k,
            what="press",
            timeout=30,
            detail=lambda: state(node),
        )
        for status in ("received", "acknowledged", "arrived", "resolved"):
            server.call_ack(dev, call["call_id"], status)
        wait_for(
            lambda: node.lamp() == "off", timeout=30, what="call resolved", detail=node.log_tail
        )
        calls_done += 1
        assert node.alive(), node.log_tail()
        time.sleep(pause)  # the pace of the run, not a wait for anything
    assert calls_done >= 5
    return samples


def check_flat(
    node: Node, server: Server, samples: list[tuple[float, int, int, int]], minutes: float = 1
) -> None:
    assert node.alive() and not node.logged("MemoryError"), node.log_tail()
    # A message that does not fit the fragmented heap is caught and sent at the
    # next wake, 100 ms later, nothing lost (report.py; every press of the run
    # was awaited at the server). On the 64-bit unix port in 64 KB that happens
    # now and then (docs/firmware.md, heap); more often would be a regression.
    retries = node.logged("out of memory")
    assert len(retries) <= RETRIES_PER_MINUTE * minutes, node.log_tail()
    assert not node.logged("failed; starting it again"), node.log_tail()
    assert server.rejected == []
    third = max(len(samples) // 3, 1)
    settled = statistics.median(s[1] for s in samples[1 : third + 1])
    late = statistics.median(s[1] for s in samples[-third:])
    assert late - settled <= GROWTH_BOUND, (settled, late, samples)
    assert min(s[2] for s in samples) > 4096, samples  # room to spare, all along


@pytest.fixture
def busy_node(node_factory: Callable[..., Node], server: Server) -> Node:
    node = node_factory(occupancy_s=2, telemetry_s=5)
    server.wait(node.device, "status", lambda s: s == "online")
    return node


def test_heap_stays_flat_for_a_busy_minute(busy_node: Node, server: Server) -> None:
    samples = busy_run(busy_node, server, 60, pause=PAUSE)
    check_flat(busy_node, server, samples)
    tele = server.of(busy_node.device, "telemetry")
    assert len(tele) >= 8 and all(t["heap_free"] > 0 for t in tele)


@pytest.mark.soak
@pytest.mark.timeout(2400)
@pytest.mark.skipif(not os.environ.get("SOAK"), reason="`make soak` runs it")
def test_heap_stays_flat_for_30_busy_minutes(busy_node: Node, server: Server) -> None:
    samples = busy_run(busy_node, server, 30 * 60, pause=PAUSE)
    check_flat(busy_node, server, samples, minutes=30)
