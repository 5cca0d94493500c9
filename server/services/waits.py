"""Predicted wait: when every nearby room is taken, how long until one frees up.

Learned from stored history: each room's past session lengths (free →
occupied → free) over the last `pages.wait_history_days`. For a room in use
for `e` seconds, the chance it is still in use `t` seconds from now is
S(e + t) / S(e), where S is the share of its past sessions longer than that.
The wait is the `t` at which every nearby room is still in use with
probability one half (the median of the first room to free up); "usually
within" is where that probability falls to one in five.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel

from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from mamaroom.storage.rollups import OccupancyEvent
from server.services.rooms import PublicRoom

log = get_logger(__name__)

#: Sessions longer than this are doors left locked, not visits.
MAX_SESSION_S = 4 * 3600
#: Fewer past sessions than this and a room borrows the whole park's history.
MIN_OWN_SESSIONS = 20
#: A room already in use longer than any past session: assume it frees within
#: about this long (mean of an exponential tail).
OVERDUE_MEAN_S = 300.0
STEP_S = 30
HORIZON_S = 3 * 3600
CACHE_S = 600


class WaitEstimate(BaseModel):
    #: The rooms the estimate is about (near, open, in service, not offline).
    rooms: list[str]
    #: Of those, the ones free now: no wait.
    available: list[str]
    #: Median minutes until the first of them frees up; 0 when one is free,
    #: None when no room can be predicted (all offline or closed, or no history).
    wait_minutes: float | None
    #: One in five waits is longer than this.
    within_minutes: float | None
    #: Past sessions the estimate learned from.
    sessions: int


@dataclass
class _Survival:
    lengths: list[float]  # sorted

    def share_longer(self, t: float) -> float:
        n = len(self.lengths)
        return (n - bisect.bisect_right(self.lengths, t)) / n if n else 0.0

    def still_busy(self, elapsed: float, more: float) -> float:
        """P(still in use `more` seconds from now | in use for `elapsed` so far)."""
        now_share = self.share_longer(elapsed)
        if now_share == 0.0:
            return math.exp(-more / OVERDUE_MEAN_S)
        return self.share_longer(elapsed + more) / now_share


class _Sessions:
    """Each room's finished sessions as (end ms, length s), fed events in time
    order; a refresh reads only what arrived since the last one."""

    def __init__(self, before: dict[str, bool]) -> None:
        self.state: dict[str, bool] = dict(before)
        self.started: dict[str, int | None] = {}
        self.done: dict[str, list[tuple[int, float]]] = {}

    def feed(self, room: str, t_ms: int, occupied: bool) -> None:  # noqa: FBT001 (the event's value)
        was = self.state.get(room, False)
        if occupied and not was:
            self.started[room] = t_ms
        elif was and not occupied:
            start = self.started.get(room)
            if start is not None and 0 < t_ms - start <= MAX_SESSION_S * 1000:
                self.done.setdefault(room, []).append((t_ms, (t_ms - start) / 1000))
            self.started[room] = None
        self.state[room] = occupied

    def prune(self, before_ms: int) -> None:
        for room, items in self.done.items():
            self.done[room] = [x for x in items if x[0] >= before_ms]

    def lengths(self) -> dict[str, list[float]]:
        return {
            room: sorted(length for _, length in items)
            for room, items in self.done.items()
            if items
        }


def session_lengths(
    events: list[tuple[str, int, bool]], before: dict[str, bool]
) -> dict[str, list[float]]:
    """room → lengths (s) of the sessions that both started and ended in the window."""
    sessions = _Sessions(before)
    for room, t_ms, occupied in events:
        sessions.feed(room, t_ms, occupied)
    return sessions.lengths()


class OccupancyWindow(Protocol):
    """All the predictor reads of a store (a RollupStore is one)."""

    async def occupancy_window(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[OccupancyEvent], dict[str, bool]]: ...


class WaitPredictor:
    def __init__(
        self, store: OccupancyWindow, history_days: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._days = history_days
        self._clock = clock
        self._lengths: dict[str, list[float]] = {}
        self._pooled = _Survival([])
        self._loaded_at: float | None = None
        self._sessions: _Sessions | None = None
        self._end_ms = 0
        self._lock = asyncio.Lock()

    async def _history(self) -> None:
        """Read the history once, then only what is new, at most every CACHE_S."""
        async with self._lock:  # one reader; concurrent requests wait for it
            now = self._clock()
            if self._loaded_at is not None and now - self._loaded_at < CACHE_S:
                return
            end_ms = int(now * 1000)
            horizon_ms = end_ms - self._days * 86_400_000
            if self._sessions is None:
                events, before = await self._store.occupancy_window(horizon_ms, end_ms)
                self._sessions = _Sessions(before)
            else:
                events, _ = await self._store.occupancy_window(self._end_ms, end_ms)
            for e in events:
                self._sessions.feed(e.room, e.time_ms, e.occupied)
            self._sessions.prune(horizon_ms)
            self._end_ms = end_ms
            self._lengths = self._sessions.lengths()
            self._pooled = _Survival(sorted(x for ls in self._lengths.values() for x in ls))
            self._loaded_at = now
            log.info(
                "wait history read",
                rooms=len(self._lengths),
                events=len(events),
                sessions=len(self._pooled.lengths),
                days=self._days,
            )

    async def warm(self) -> None:
        """Read the history in the background at start, not on a mother's first tap."""
        try:
            await self._history()
        except StorageError as exc:
            log.warning("wait history not read; will retry on demand", error=str(exc))

    async def estimate(self, rooms: list[PublicRoom], now: datetime | None = None) -> WaitEstimate:
        considered = [
            r
            for r in rooms
            if r.in_service and r.open_now and not r.cleaning and r.state.value != "offline"
        ]
        available = [r.id for r in considered if r.available]
        ids = [r.id for r in considered]
        if available:
            return WaitEstimate(
                rooms=ids, available=available, wait_minutes=0, within_minutes=0, sessions=0
            )
        busy = [r for r in considered if r.state.value == "occupied"]
        if not busy:
            return WaitEstimate(
                rooms=ids, available=[], wait_minutes=None, within_minutes=None, sessions=0
            )
        await self._history()
        now_s = now.timestamp() if now else self._clock()
        models: list[tuple[_Survival, float]] = []
        learned = 0
        for r in busy:
            own = self._lengths.get(r.id, [])
            model = _Survival(own) if len(own) >= MIN_OWN_SESSIONS else self._pooled
            if not model.lengths:
                continue
            learned += len(model.lengths)
            elapsed = max(0.0, now_s - r.since.timestamp()) if r.since else 0.0
            models.append((model, elapsed))
        if not models:
            return WaitEstimate(
                rooms=ids, available=[], wait_minutes=None, within_minutes=None, sessions=0
            )
        median = within = None
        for t in range(0, HORIZON_S + STEP_S, STEP_S):
            all_busy = math.prod(m.still_busy(e, t) for m, e in models)
            if median is None and all_busy <= 0.5:
                median = t
            if all_busy <= 0.2:
                within = t
                break
        return WaitEstimate(
            rooms=ids,
            available=[],
            wait_minutes=None if median is None else round(median / 60, 1),
            within_minutes=None if within is None else round(within / 60, 1),
            sessions=learned,
        )
