"""The one place that chooses the storage backend (`storage.backend`).

Device state (health, room states, unknown devices) and dead letters are
always in the embedded file (embedded.py); the time series are there too, or
in InfluxDB. Gateway, server and CLI ask
`open_stores` rather than each reading the setting, so a new backend or a
moved file changes here only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mamaroom.config import Settings
from mamaroom.storage.embedded import EmbeddedStore
from mamaroom.storage.influx import BatchHook, InfluxStore
from mamaroom.storage.sqlite import SqliteSeries


@dataclass(frozen=True)
class Stores:
    """The stores of one process, built but not opened: each process opens
    (and closes) the ones it uses. On the embedded backend `series` is
    `embedded.series`, opened with the rest of its file."""

    #: store.sqlite: device state and dead letters (and the embedded series).
    embedded: EmbeddedStore
    #: Time series, rollups and trend aggregates.
    series: SqliteSeries | InfluxStore
    #: The InfluxDB store when that is the backend (its spool, its drainer).
    influx: InfluxStore | None
    #: Where the loss audit (seq gaps, seq_audit.py) is kept: the file every
    #: device message meets, the embedded store or the InfluxDB spool.
    audit_path: Path

    @property
    def series_home(self) -> EmbeddedStore | InfluxStore:
        """What to open (and close) to use `series`: InfluxDB's store, or
        store.sqlite with every component in it."""
        return self.influx or self.embedded


def open_stores(
    settings: Settings,
    *,
    gateway: str,
    backend: str | None = None,
    telemetry_retention: bool = True,
    on_batch: BatchHook | None = None,
    on_error: Callable[[], None] | None = None,
) -> Stores:
    """Build the stores of `backend` (default: `settings.storage.backend`).
    `gateway` names the writer in InfluxDB; `telemetry_retention=False`
    leaves InfluxStore's own default (a reader that never writes telemetry)."""
    embedded = EmbeddedStore(settings.store_path)
    if (backend or settings.storage.backend) != "influxdb":
        return Stores(
            embedded=embedded, series=embedded.series, influx=None, audit_path=settings.store_path
        )
    retention = (
        {"telemetry_retention_days": settings.storage.telemetry_retention_days}
        if telemetry_retention
        else {}
    )
    influx = InfluxStore(
        settings.storage.influxdb,
        settings.spool_path,
        gateway=gateway,
        on_batch=on_batch,
        on_error=on_error,
        **retention,
    )
    return Stores(embedded=embedded, series=influx, influx=influx, audit_path=settings.spool_path)
