"""Time as the parts exchange it (integer ms since the Unix epoch), and the
monotonic time every timer runs on.

Wall time is for display and storage only: it can step (NTP correcting a
wrong clock, an operator, a VM resumed). Anything that measures a duration
(supervision, rate budgets, timeouts) uses `monotonic_ms`, which never steps;
`WallStepWatch` notices a step so it can be logged and accounted for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

#: 9999-12-31T23:59:59.999Z, the last instant a `datetime` can hold.
_MAX_MS = 253_402_300_799_999


def wall_ms() -> int:
    """Now, in ms. Services take a clock like this one as a parameter, so tests
    can drive timers (supervision, escalation) exactly."""
    return int(time.time() * 1000)


def monotonic_ms() -> int:
    """A clock that never steps, in ms (its zero is arbitrary): for durations only."""
    return time.monotonic_ns() // 1_000_000


def from_ms(ms: int | None) -> datetime | None:
    """A datetime for `ms`, clamped to what a datetime can hold: a device's
    absurd clock must never raise here (it once stopped all ingest)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(min(max(ms, 0), _MAX_MS) / 1000, tz=UTC)


class WallStepWatch:
    """Notices the wall clock stepping: wall minus monotonic time is constant
    while the wall clock runs freely (NTP slewing moves it by ms per minute);
    a change above `threshold_ms` between two checks is a step."""

    def __init__(
        self,
        threshold_ms: int = 2000,
        *,
        wall: Callable[[], int] = wall_ms,
        mono: Callable[[], int] = monotonic_ms,
    ) -> None:
        self.threshold_ms = threshold_ms
        self._wall = wall
        self._mono = mono
        self._offset = wall() - mono()

    def check(self) -> int:
        """The step since the last check in ms (positive: forward), or 0."""
        offset = self._wall() - self._mono()
        step = offset - self._offset
        self._offset = offset
        return step if abs(step) > self.threshold_ms else 0
