"""The whole node across a tick wrap. On the ESP32 `time.ticks_ms()` wraps at
2**30 ms (~12.4 days); the unix board's clock (firmware/ticks.py) runs with
that period and here starts 40 s below the wrap, so a call, the radar's
stuck-target timeout, the watchdog's feeding (and a task restarted by the
supervisor) and telemetry are seen working
before the wrap and after it."""

from __future__ import annotations

from collections.abc import Callable

from tests.firmware.nodes import Node, Server, seqs_increase
from tests.firmware.test_node import calls, press_and_wait
from tests.support import wait_for

NodeFactory = Callable[..., Node]
PERIOD = 1 << 30
BEFORE_WRAP_MS = 40000


def ticks(node: Node) -> int:
    return int(node.ctl("ticks?").split()[1])


def feeds(node: Node) -> int:
    return int(node.ctl("feeds?").split()[1])


def wrapped(node: Node) -> bool:
    return ticks(node) < PERIOD // 2


def a_whole_call(node: Node, server: Server) -> None:
    """Press, every status on the lamp, the staff key twice: the call is over."""
    dev = node.device
    call_id = press_and_wait(node, server)
    for status, lamp in (("received", "slow"), ("acknowledged", "steady")):
        server.call_ack(dev, call_id, status)
        wait_for(
            lambda: node.lamp() == lamp,  # noqa: B023 (polled before the loop moves on)
            timeout=10,
            what=f"lamp {lamp}",
            detail=node.log_tail,
        )
    assert node.ctl("staff") == "ok"
    wait_for(lambda: calls(server, dev, "presence", call_id), timeout=10, what="presence")
    server.call_ack(dev, call_id, "arrived")
    assert node.ctl("staff") == "ok"
    wait_for(lambda: calls(server, dev, "reset", call_id), timeout=10, what="reset")
    server.call_ack(dev, call_id, "resolved")
    wait_for(lambda: node.lamp() == "off", timeout=10, what="lamp off")
    assert not node.buzzer()


def test_the_node_across_a_tick_wrap(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory(
        env={"MAMAROOM_TICKS_START": str(PERIOD - BEFORE_WRAP_MS)},
        telemetry_s=1,
        occupancy_s=1,
        keepalive_s=5,
        filters={"delayed_on_ms": 300, "delayed_off_ms": 1500, "radar_stuck_s": 6},
    )
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online", detail=node.log_tail)
    assert PERIOD - BEFORE_WRAP_MS <= ticks(node) < PERIOD  # not wrapped yet

    # Before the wrap: a still target becomes a stuck one; a call; a stall.
    assert node.ctl("door unlocked") == "ok" and node.ctl("radar still 120") == "ok"
    a_whole_call(node, server)
    server.wait(
        dev,
        "telemetry",
        lambda t: t["radar_stuck"] is True,
        timeout=20,
        what="stuck before the wrap",
        detail=node.log_tail,
    )
    assert not wrapped(node), "the test is too slow: the wrap came before the call"
    assert node.ctl("fault panel") == "ok"  # restarted by the supervisor
    wait_for(lambda: node.logged("task panel ended"), timeout=10, what="the restart")
    f = feeds(node)
    wait_for(lambda: feeds(node) > f, timeout=10, what="the watchdog fed before the wrap")
    assert not wrapped(node), "the test is too slow: the wrap came before the feeding"
    n_tele = len(server.of(dev, "telemetry"))

    wait_for(lambda: wrapped(node), timeout=BEFORE_WRAP_MS / 1000 + 30, what="the ticks wrap")

    # After it: the watchdog is still fed, telemetry
    # goes on with uptime growing, the ghost stays stuck, still_s only grows.
    f = feeds(node)
    wait_for(lambda: feeds(node) > f + 4, timeout=30, what="the watchdog fed after the wrap")
    after = server.wait(
        dev,
        "telemetry",
        lambda t: (
            server.of(dev, "telemetry").index(t) >= n_tele
            and t["uptime_s"] >= BEFORE_WRAP_MS // 1000
        ),
        timeout=30,
        what="telemetry after the wrap",
        detail=node.log_tail,
    )
    assert after["radar_stuck"] is True and after["radar"] == "still", after
    a_whole_call(node, server)
    m = server.wait(
        dev,
        "occupancy",
        lambda m: m["still_s"] >= BEFORE_WRAP_MS // 1000,
        timeout=30,
        what="still_s past the wrap",
    )
    assert m["radar"] == "still"
    # The radar no longer counts (stuck): the room is free unless the door is locked.
    assert node.ctl("door locked") == "ok"
    server.wait(
        dev,
        "occupancy",
        lambda m: m["occupied"] and m["source"] == "door",
        what="the door lock after the wrap",
    )

    occ = server.of(dev, "occupancy")
    still = [m["still_s"] for m in occ if m["radar"] == "still"]
    assert still and min(still) >= 0 and still == sorted(still), still

    # The stuck timeout works after the wrap too: she moves (the radar
    # counts again), then keeps still past radar_stuck_s (a ghost again).
    n_tele = len(server.of(dev, "telemetry"))
    for state, stuck in (("moving", False), ("still", True)):
        assert node.ctl(f"radar {state} 120") == "ok"
        server.wait(
            dev,
            "telemetry",
            lambda t, s=state, k=stuck: (
                server.of(dev, "telemetry").index(t) >= n_tele
                and t["radar"] == s
                and t["radar_stuck"] is k
            ),
            timeout=30,
            what=f"radar {state}, stuck {stuck}, after the wrap",
            detail=node.log_tail,
        )
    assert wrapped(node)
    occ = server.of(dev, "occupancy")
    tele = server.of(dev, "telemetry")
    ups = [t["uptime_s"] for t in tele]
    assert ups == sorted(ups) and ups[-1] < ups[0] + 600, ups
    assert seqs_increase(occ) and seqs_increase(tele) and server.rejected == []
    assert node.alive() and not node.logged("Traceback")
