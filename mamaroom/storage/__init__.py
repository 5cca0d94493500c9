"""Storage shared by gateway (writes) and server (reads).

One small protocol; the embedded SQLite store is the default. Deduplication on
`(device, boot, seq)` lives inside each backend's write path, so a restart
never forgets what was already stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mamaroom.contract import Envelope, Kind
from mamaroom.storage.rollups import HourRollup, OccupancyEvent, hourly_occupancy


class StorageError(Exception):
    """The store could not do what was asked (unreachable, corrupt, full disk)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One valid device message, enriched with its room and arrival time."""

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
        """Device time when it has a synced clock, else the first arrival time."""
        return self.message.ts if self.message.ts is not None else self.received_ms


class RollupStore(Protocol):
    """Hourly rollups (see rollups.py): read the events, write the rollups."""

    async def occupancy_window(self, start_ms: int, end_ms: int
                               ) -> tuple[list[OccupancyEvent], dict[str, bool]]: ...

    async def write_rollups(self, rows: list[HourRollup]) -> None: ...

    async def rollups(self, start_ms: int, end_ms: int) -> list[HourRollup]: ...


async def refresh_rollups(store: RollupStore, start_ms: int, end_ms: int) -> int:
    """Recompute the hourly rollups of [start, end) (hour boundaries); rows written."""
    events, before = await store.occupancy_window(start_ms, end_ms)
    rows = hourly_occupancy(events, start_ms, end_ms, before)
    await store.write_rollups(rows)
    return len(rows)


class Store(Protocol):
    """Where device messages are kept (time series). Implementations:
    `sqlite.SqliteStore` (embedded default) and `influx.InfluxStore`."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageError when the store cannot be used."""

    async def write(self, records: list[Record]) -> list[bool]:
        """Durably handle records in one batch: stored, or spooled to disk.
        True where new, False where `(device, boot, seq)` was already handled."""
        ...
