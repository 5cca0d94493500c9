"""The one place that chooses the storage backend (`storage.backend`).

Device state (health, room states, unknown devices) is always the embedded
store; the time series are it too, or InfluxDB. Gateway, server and CLI ask
`open_stores` rather than each reading the setting, so a new backend or a
moved file changes here only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mamaroom.config import Settings
from mamaroom.storage.influx import BatchHook, InfluxStore
from mamaroom.storage.sqlite import SqliteStore


@dataclass(frozen=True)
class Stores:
    """The stores of one process, built but not opened: each process opens
    (and closes) the ones it uses. `series` is `state` itself on the
    embedded backend, so the two are opened once."""

    #: Device state: always the embedded SQLite store.
    state: SqliteStore
    #: Time series, rollups and trend aggregates.
    series: SqliteStore | InfluxStore
    #: The InfluxDB store when that is the backend (its spool, its drainer).
    influx: InfluxStore | None
    #: Where the loss audit (seq gaps, seq_audit.py) is kept: the file every
    #: device message meets, the embedded store or the InfluxDB spool.
    audit_path: Path


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
    state = SqliteStore(settings.store_path)
    if (backend or settings.storage.backend) != "influxdb":
        return Stores(state=state, series=state, influx=None, audit_path=settings.store_path)
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
    return Stores(state=state, series=influx, influx=influx, audit_path=settings.spool_path)
