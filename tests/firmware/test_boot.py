"""A boot that runs out of memory: the node restarts (never sits at a REPL),
and after three crashes in a row runs the room alone (safe mode): the button
lights the lamp and sounds the buzzer, the staff key turns them off. The
out-of-memory error is a real one: the node is given a heap too small for
its firmware (44 KB; it needs ~58), but enough for the safe mode."""

from __future__ import annotations

from collections.abc import Callable

from tests.firmware.nodes import Node
from tests.support import wait_for

NodeFactory = Callable[..., Node]


def test_out_of_memory_at_boot_restarts_and_then_runs_the_room_alone(
    node_factory: NodeFactory,
) -> None:
    node = node_factory(start=False, heap="44K")
    node.write_config()
    crashes = node.workdir / "var" / "crashes"
    for i in range(1, 4):
        rc, out = node.run_to_exit()
        assert rc == 75 and "MemoryError" in out and "board: reset" in out, out
        assert crashes.read_text() == "x" * i  # a byte per crash
    node.start(config=False)  # the fourth boot: safe mode, the control port up
    assert node.logged("3 crashes in a row: safe mode")
    assert node.ctl("led?") == "led safe" and node.lamp() == "off" and not node.buzzer()
    node.press()
    wait_for(
        lambda: node.lamp() == "steady",
        timeout=10,
        what="lamp lit in safe mode",
        detail=node.log_tail,
    )
    assert node.buzzer()
    node.press()  # the mother cannot turn it off
    assert node.ctl("staff") == "ok"
    wait_for(lambda: node.lamp() == "off", timeout=10, what="staff key: off", detail=node.log_tail)
    assert not node.buzzer() and node.alive()


def test_a_crash_count_below_the_limit_boots_the_node(node_factory: NodeFactory) -> None:
    node = node_factory(start=False)
    (node.workdir / "var").mkdir(parents=True)
    (node.workdir / "var" / "crashes").write_text("xx")
    node.start()
    assert node.ctl("led?") != "led safe"
    wait_for(
        lambda: node.logged("mqtt: online at"),
        timeout=20,
        what="the node online",
        detail=node.log_tail,
    )
