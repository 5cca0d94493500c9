"""Storage shared by gateway (writes) and server (reads).

One protocol for the time series (`Store`, what the gateway needs of a
backend); the embedded SQLite store is the default. Deduplication on
`(device, boot, seq)` lives inside each backend's write path, so a restart
never forgets what was already stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from mamaroom.contract import TS_SKEW_MS, Call, Envelope, Kind, payload_fields
from mamaroom.storage.rollups import (
    DAY_MS,
    MAX_SESSION_MIN,
    MINUTE_MS,
    TELEMETRY_CONTEXT_MS,
    CoarseRollups,
    HourRollup,
    OccupancyEvent,
    SessionRollup,
    TelemetryHour,
    TelemetryReport,
    coarse_rollups,
    hourly_occupancy,
    session_lengths,
    telemetry_hours,
)

if TYPE_CHECKING:  # seq_audit imports this module's errors
    from mamaroom.storage.seq_audit import SeqGap

#: Payload fields the time-series stores leave out. A call's `test` marker:
#: whether a call is a test is the server's room test mode, kept with its alert.
NOT_STORED: dict[type[Envelope], frozenset[str]] = {Call: frozenset({"test"})}


def stored_fields(model: type[Envelope]) -> tuple[str, ...]:
    """What a store keeps of a device payload besides its envelope, in order:
    the contract's fields of it (`payload_fields`), less NOT_STORED. Each
    backend's columns or fields are checked against this (tests/test_storage_fields.py)."""
    skip = NOT_STORED.get(model, frozenset())
    return tuple(name for name in payload_fields(model) if name not in skip)


class StorageError(Exception):
    """The store could not do what was asked (unreachable, corrupt, full disk)."""


class RefusedError(StorageError):
    """The store refuses this data itself (a value it cannot hold, a constraint):
    retrying cannot help. The gateway finds the record(s) at fault and sets
    them aside as dead letters (dead_letters.py) instead of retrying."""


class Record(NamedTuple):
    """One valid device message, enriched with its room and arrival time.
    A NamedTuple: one is built per message, and a frozen dataclass costs
    several times as much to build (each field through object.__setattr__)."""

    device: str
    room: str | None
    kind: Kind
    message: Envelope
    #: Gateway clock at first arrival, ms since the epoch.
    received_ms: int
    building: str | None = None
    floor: int | None = None

    @property
    def time_ms(self) -> int:
        """Device time when it has a synced clock within TS_SKEW_MS of the
        arrival (contract), else the first arrival time. Inlined
        `contract.message_time`: it is read several times per message."""
        ts = self.message.ts
        if ts is not None and -TS_SKEW_MS <= ts - self.received_ms <= TS_SKEW_MS:
            return ts
        return self.received_ms

    @property
    def ts_flagged(self) -> bool:
        """The device sent a `ts` too far from the arrival time to be trusted."""
        return self.message.ts is not None and self.time_ms != self.message.ts


class RollupStore(Protocol):
    """Hourly rollups (see rollups.py): read the events, write the rollups."""

    async def occupancy_window(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[OccupancyEvent], dict[str, bool]]: ...

    async def write_rollups(self, rows: list[HourRollup]) -> None: ...

    async def rollups(self, start_ms: int, end_ms: int) -> list[HourRollup]: ...

    async def write_session_rollups(
        self, start_ms: int, end_ms: int, rows: list[SessionRollup]
    ) -> None:
        """Replace the session-length rollups of the hours in [start, end)."""

    async def session_rollups(self, start_ms: int, end_ms: int) -> list[SessionRollup]: ...

    async def write_coarse_rollups(
        self, day_start_ms: int, day_end_ms: int, rows: CoarseRollups
    ) -> None:
        """Replace the coarse rollups (rollups.py) of the UTC days [start, end)."""

    async def telemetry_reports(self, start_ms: int, end_ms: int) -> list[TelemetryReport]:
        """Raw telemetry reports in [start, end): device, time, boot."""
        ...

    async def write_telemetry_rollups(
        self, start_ms: int, end_ms: int, rows: list[TelemetryHour]
    ) -> None:
        """Replace the telemetry rollups of the hours in [start, end)."""


async def refresh_rollups(
    store: RollupStore, start_ms: int, end_ms: int, *, telemetry: bool = True
) -> int:
    """Recompute the hourly rollups of [start, end) (hour boundaries), and the
    session lengths of the sessions that started then; hourly rows written.
    `telemetry=False` leaves the telemetry rollup alone: it reads every
    report of the window (a day of 190 nodes: 270,000), which the gateway
    does in the background; the server's on-demand refresh skips it."""
    # Sessions that start in the window may end after it: read on to find their ends.
    horizon = max(end_ms, min(end_ms + MAX_SESSION_MIN * MINUTE_MS, int(time.time() * 1000)))
    events, before = await store.occupancy_window(start_ms, horizon)
    rows = hourly_occupancy([e for e in events if e.time_ms < end_ms], start_ms, end_ms, before)
    await store.write_rollups(rows)
    lengths = session_lengths(events, start_ms, end_ms, before, horizon)
    await store.write_session_rollups(start_ms, end_ms, lengths)
    # The coarse rows of every UTC day the window touches; the parts of those
    # days outside the window are read back.
    day_start, day_end = start_ms // DAY_MS * DAY_MS, -(-end_ms // DAY_MS) * DAY_MS
    hourly = [
        *await store.rollups(day_start, start_ms),
        *rows,
        *await store.rollups(end_ms, day_end),
    ]
    sessions = [
        *await store.session_rollups(day_start, start_ms),
        *lengths,
        *await store.session_rollups(end_ms, day_end),
    ]
    await store.write_coarse_rollups(
        day_start, day_end, coarse_rollups(hourly, sessions, day_start, day_end)
    )
    if telemetry:
        # Device uptime reads these, not a month of raw telemetry (8 million points).
        reports = await store.telemetry_reports(
            start_ms - TELEMETRY_CONTEXT_MS, end_ms + TELEMETRY_CONTEXT_MS
        )
        # About a second per 400,000 reports: off the event loop (the
        # gateway's carries emergency calls).
        hours = await asyncio.to_thread(telemetry_hours, reports, start_ms, end_ms)
        await store.write_telemetry_rollups(start_ms, end_ms, hours)
    return len(rows)


#: (hour_ms, occupied_s, sessions), summed over rooms.
HourTotal = tuple[int, float, int]
#: (room, occupied_s, sessions), summed over hours.
RoomTotal = tuple[str, float, int]
#: (device, telemetry reports, online ms, reboots), summed over hours; online
#: ms and reboots None where only rollups older than them exist (InfluxDB).
DeviceReports = tuple[str, int, int | None, int | None]


class TrendsStore(RollupStore, Protocol):
    """Aggregates for the trends service, computed inside the backend so a
    year of rollups never crosses the wire row by row. `rooms` None = all."""

    async def rollup_hour_totals(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[HourTotal]:
        """Per hour in [start, end) that has rollups, in hour order."""
        ...

    async def rollup_room_totals(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[RoomTotal]:
        """Per room that has rollups in [start, end), in room order."""
        ...

    async def session_length_counts(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> dict[int, int]:
        """Sessions started in [start, end) by length in whole minutes."""
        ...

    async def site_hour_totals(self, start_ms: int, end_ms: int) -> list[HourTotal]:
        """Per hour in [start, end), summed over every room (coarse rollups)."""
        ...

    async def daily_room_totals(
        self, day_start_ms: int, day_end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[RoomTotal]:
        """Per room, over the UTC days in [start, end) (coarse rollups)."""
        ...

    async def site_session_length_counts(
        self, day_start_ms: int, day_end_ms: int
    ) -> dict[int, int]:
        """Sessions started in the UTC days [start, end), all rooms, by minutes."""
        ...

    async def telemetry_totals(self, start_ms: int, end_ms: int) -> list[DeviceReports]:
        """Per device with telemetry rollups in [start, end), in device order."""
        ...


class Store(RollupStore, Protocol):
    """Where device messages are kept (time series), as the gateway uses it.
    Implementations: `sqlite.SqliteSeries` (embedded default) and
    `influx.InfluxStore`; `stores.Stores.series_home` opens and closes them."""

    async def write(self, records: list[Record]) -> list[bool]:
        """Durably handle records in one batch: stored, or spooled to disk.
        True where new, False where `(device, boot, seq)` was already handled."""
        ...

    async def seq_gaps(self) -> list[SeqGap]:
        """The loss audit (seq_audit.py), kept in the same transaction as `write`."""
        ...
