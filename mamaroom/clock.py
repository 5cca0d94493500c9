"""Wall-clock time as the parts exchange it: integer ms since the Unix epoch."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def wall_ms() -> int:
    """Now, in ms. Services take a clock like this one as a parameter, so tests
    can drive timers (supervision, escalation) exactly."""
    return int(time.time() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
