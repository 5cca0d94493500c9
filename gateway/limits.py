"""Per-device message budgets: a token bucket per device, on monotonic time.

One node must not be able to flood everyone: beyond its budget its messages
are dropped (and counted) before they cost a write. Calls are budgeted apart
from everything else, generously, so a chatty node can never starve its own
emergency call.
"""

from __future__ import annotations


class Budget:
    """`rate_per_s` sustained, `burst` at once, per key (a device id).
    Keys are devices in the registry, so the table is bounded by it."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_ms = rate_per_s / 1000
        self.burst = float(burst)
        #: key → [tokens left, monotonic ms of the last refill]
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str, now_mono_ms: int) -> bool:
        """Spend one token of `key`'s bucket; False when there is none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [self.burst - 1, now_mono_ms]
            return True
        tokens = min(self.burst, bucket[0] + (now_mono_ms - bucket[1]) * self.rate_per_ms)
        bucket[1] = now_mono_ms
        if tokens >= 1:
            bucket[0] = tokens - 1
            return True
        bucket[0] = tokens
        return False

    def forget(self, keep: set[str]) -> None:
        """Drop the buckets of devices no longer in the registry."""
        for key in [k for k in self._buckets if k not in keep]:
            del self._buckets[key]
