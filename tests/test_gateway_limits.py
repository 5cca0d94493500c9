"""The per-device budget and the wall-clock step watch, on exact clocks."""

from __future__ import annotations

from gateway.limits import Budget
from mamaroom.clock import WallStepWatch


def test_the_budget_allows_a_burst_then_the_rate_per_device() -> None:
    budget = Budget(rate_per_s=2, burst=5)
    assert [budget.take("a", 0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert budget.take("b", 0)  # one node's flood costs the others nothing
    assert [budget.take("a", 499) for _ in range(1)] == [False]  # 0.998 tokens
    assert budget.take("a", 500) and not budget.take("a", 500)
    assert [budget.take("a", 10_000_000) for _ in range(6)] == [True] * 5 + [False]  # capped
    budget.forget({"b"})
    assert budget.take("a", 10_000_000)  # forgotten: a fresh bucket


def test_a_wall_clock_step_is_noticed_once_and_slewing_is_not() -> None:
    wall, mono = [1_800_000_000_000], [5_000]
    watch = WallStepWatch(2000, wall=lambda: wall[0], mono=lambda: mono[0])
    wall[0] += 10_000
    mono[0] += 10_000
    assert watch.check() == 0
    wall[0] += 1_500  # slewing: 1.5 s over the interval, under the threshold
    assert watch.check() == 0
    wall[0] -= 3_600_000
    assert watch.check() == -3_600_000
    assert watch.check() == 0  # reported once
    wall[0] += 3_600_000
    assert watch.check() == 3_600_000
