"""The embedded time-series backend: device messages, their rollups and the
loss audit, in `store.sqlite` (WAL) beside the device state (device_state.py),
on the same connection (embedded.py). Zero setup; the default backend."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from mamaroom.contract import Call, Occupancy, Telemetry
from mamaroom.storage import DeviceReports, HourTotal, Record, RoomTotal, StorageError
from mamaroom.storage.device_state import DeviceStateStore, note_known, note_messages
from mamaroom.storage.migrations import Migration
from mamaroom.storage.rollups import (
    CoarseRollups,
    HourRollup,
    OccupancyEvent,
    SessionRollup,
    TelemetryHour,
    TelemetryReport,
)
from mamaroom.storage.seq_audit import SCHEMA as AUDIT_SCHEMA
from mamaroom.storage.seq_audit import SeqGap, migrate_audit, note_seqs, read_gaps
from mamaroom.storage.sqlite_base import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS occupancy (
    device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    room TEXT, time_ms INTEGER NOT NULL, device_ts_ms INTEGER, received_ms INTEGER NOT NULL,
    occupied INTEGER NOT NULL, source TEXT NOT NULL, radar TEXT, still_s INTEGER,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS occupancy_room_time ON occupancy (room, time_ms);
CREATE TABLE IF NOT EXISTS telemetry (
    device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    room TEXT, time_ms INTEGER NOT NULL, device_ts_ms INTEGER, received_ms INTEGER NOT NULL,
    uptime_s INTEGER, rssi INTEGER, heap_free INTEGER, fw TEXT, extra TEXT,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS telemetry_device_time ON telemetry (device, time_ms);
CREATE TABLE IF NOT EXISTS calls (
    device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    room TEXT, time_ms INTEGER NOT NULL, device_ts_ms INTEGER, received_ms INTEGER NOT NULL,
    action TEXT NOT NULL, call_id TEXT NOT NULL, status TEXT,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID;
-- Hourly rollups computed by mamaroom (mamaroom/storage/rollups.py).
CREATE TABLE IF NOT EXISTS occupancy_hourly (
    room TEXT NOT NULL, hour_ms INTEGER NOT NULL, occupied_s REAL NOT NULL,
    sessions INTEGER NOT NULL, PRIMARY KEY (room, hour_ms)
) WITHOUT ROWID;
-- Completed sessions by start hour and length in whole minutes (rollups.py).
CREATE TABLE IF NOT EXISTS session_lengths (
    room TEXT NOT NULL, hour_ms INTEGER NOT NULL, minutes INTEGER NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (room, hour_ms, minutes)
) WITHOUT ROWID;
-- Coarse rollups for long ranges (rollups.py); the indexes serve time ranges
-- over every room.
CREATE INDEX IF NOT EXISTS occupancy_hourly_hour ON occupancy_hourly (hour_ms);
CREATE INDEX IF NOT EXISTS session_lengths_hour ON session_lengths (hour_ms);
CREATE TABLE IF NOT EXISTS occupancy_site_hourly (
    hour_ms INTEGER PRIMARY KEY, occupied_s REAL NOT NULL, sessions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS occupancy_daily (
    room TEXT NOT NULL, day_ms INTEGER NOT NULL, occupied_s REAL NOT NULL,
    sessions INTEGER NOT NULL, PRIMARY KEY (day_ms, room)
) WITHOUT ROWID;
-- Telemetry reports per device and hour, the time online by the gaps between
-- them, and reboots (kept: raw telemetry is not; rollups.telemetry_hours).
CREATE TABLE IF NOT EXISTS telemetry_hourly (
    device TEXT NOT NULL, hour_ms INTEGER NOT NULL, points INTEGER NOT NULL,
    min_boot INTEGER NOT NULL, max_boot INTEGER NOT NULL,
    online_ms INTEGER NOT NULL DEFAULT 0, reboots INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_ms, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_lengths_daily (
    day_ms INTEGER NOT NULL, minutes INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (day_ms, minutes)
) WITHOUT ROWID;
"""


def _online_time(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(telemetry_hourly)")}
    if columns and "online_ms" not in columns:  # no table yet: made whole when needed
        # Rollups made before online time was measured from the gaps
        # between reports keep what they meant then: each report counted
        # as 60 s online, reboots the highest boot - the lowest.
        db.execute("ALTER TABLE telemetry_hourly ADD COLUMN online_ms INTEGER NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE telemetry_hourly ADD COLUMN reboots INTEGER NOT NULL DEFAULT 0")
        db.execute(
            "UPDATE telemetry_hourly SET online_ms = MIN(points * 60000, 3600000),"
            " reboots = max_boot - min_boot"
        )


class SqliteSeries(SqliteDatabase):
    """The time series of the embedded backend. It shares the connection of
    the device state it keeps current (`devices`): a write stores the
    messages, notes their seqs in the loss audit and updates the devices'
    health in one transaction, and the telemetry rollup reads its device list
    from there. Built and opened by `EmbeddedStore` (embedded.py)."""

    # "store": the name its versions have been kept under since versioning
    # began, when this component also held device state and dead letters.
    component = "store"
    migrations = (Migration(2, "telemetry rollups measure online time and reboots", _online_time),)
    schema = SCHEMA + AUDIT_SCHEMA

    def __init__(self, devices: DeviceStateStore) -> None:
        super().__init__(devices.path, connection=devices.connection)

    def migrate(self, db: sqlite3.Connection) -> None:
        migrate_audit(db)

    # --- writes (gateway) -------------------------------------------------

    async def write(self, records: list[Record], *, live: bool = True) -> list[bool]:
        """Store new records, audit their seqs and update device health, in one transaction.
        `live=False` (generated history) stores them only: a device's health,
        boot and loss audit are what its live messages say."""
        return await self._run(lambda db: _write(db, records, live=live))

    async def data_times(
        self, start_ms: int, end_ms: int, boots: tuple[int, int] | None = None
    ) -> tuple[int, int] | None:
        """The first and last time of a stored occupancy or call message in
        [start, end), of a boot outside [boots) when given; None if there is
        none. (What generated history could interleave with; telemetry of
        two sources only adds reports.)"""

        def run(db: sqlite3.Connection) -> tuple[int, int] | None:
            where = "time_ms >= ? AND time_ms < ?"
            args: tuple[int, ...] = (start_ms, end_ms)
            if boots is not None:
                where += " AND (boot < ? OR boot >= ?)"
                args += boots
            found = [
                row
                for table in ("occupancy", "calls")
                for row in db.execute(
                    f"SELECT MIN(time_ms), MAX(time_ms) FROM {table} WHERE {where}", args
                )
                if row[0] is not None
            ]
            if not found:
                return None
            return min(a for a, _ in found), max(b for _, b in found)

        return await self._run(run)

    async def occupancy_window(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[OccupancyEvent], dict[str, bool]]:
        """Occupancy events in [start, end) and each room's state just before."""

        def run(db: sqlite3.Connection) -> tuple[list[OccupancyEvent], dict[str, bool]]:
            events = [
                OccupancyEvent(r, t, bool(o))
                for r, t, o in db.execute(
                    "SELECT room, time_ms, occupied FROM occupancy WHERE room IS NOT NULL"
                    " AND time_ms >= ? AND time_ms < ? ORDER BY time_ms",
                    (start_ms, end_ms),
                )
            ]
            # SQLite returns the other columns of the row holding MAX().
            before = {
                r: bool(o)
                for r, o, _ in db.execute(
                    "SELECT room, occupied, MAX(time_ms) FROM occupancy WHERE room IS NOT NULL"
                    " AND time_ms < ? GROUP BY room",
                    (start_ms,),
                )
            }
            return events, before

        return await self._run(run)

    async def write_rollups(self, rows: list[HourRollup]) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO occupancy_hourly VALUES (?, ?, ?, ?)",
                    [(r.room, r.hour_ms, r.occupied_s, r.sessions) for r in rows],
                )

        await self._run(run)

    async def rollups(self, start_ms: int, end_ms: int) -> list[HourRollup]:
        def run(db: sqlite3.Connection) -> list[HourRollup]:
            return [
                HourRollup(*row)
                for row in db.execute(
                    "SELECT room, hour_ms, occupied_s, sessions FROM occupancy_hourly"
                    " WHERE hour_ms >= ? AND hour_ms < ? ORDER BY room, hour_ms",
                    (start_ms, end_ms),
                )
            ]

        return await self._run(run)

    async def write_session_rollups(
        self, start_ms: int, end_ms: int, rows: list[SessionRollup]
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "DELETE FROM session_lengths WHERE hour_ms >= ? AND hour_ms < ?",
                    (start_ms, end_ms),
                )
                db.executemany(
                    "INSERT INTO session_lengths VALUES (?, ?, ?, ?)",
                    [(r.room, r.hour_ms, r.minutes, r.count) for r in rows],
                )

        await self._run(run)

    async def session_rollups(self, start_ms: int, end_ms: int) -> list[SessionRollup]:
        return await self._run(
            lambda db: [
                SessionRollup(*row)
                for row in db.execute(
                    "SELECT room, hour_ms, minutes, count FROM session_lengths"
                    " WHERE hour_ms >= ? AND hour_ms < ? ORDER BY room, hour_ms, minutes",
                    (start_ms, end_ms),
                )
            ]
        )

    async def write_coarse_rollups(
        self, day_start_ms: int, day_end_ms: int, rows: CoarseRollups
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            span = (day_start_ms, day_end_ms)
            with db:
                db.execute(
                    "DELETE FROM occupancy_site_hourly WHERE hour_ms >= ? AND hour_ms < ?", span
                )
                db.execute("DELETE FROM occupancy_daily WHERE day_ms >= ? AND day_ms < ?", span)
                db.execute(
                    "DELETE FROM session_lengths_daily WHERE day_ms >= ? AND day_ms < ?", span
                )
                db.executemany(
                    "INSERT INTO occupancy_site_hourly VALUES (?, ?, ?)",
                    [(r.hour_ms, r.occupied_s, r.sessions) for r in rows.site_hours],
                )
                db.executemany(
                    "INSERT INTO occupancy_daily VALUES (?, ?, ?, ?)",
                    [(r.room, r.day_ms, r.occupied_s, r.sessions) for r in rows.days],
                )
                db.executemany(
                    "INSERT INTO session_lengths_daily VALUES (?, ?, ?)",
                    [(r.day_ms, r.minutes, r.count) for r in rows.site_sessions],
                )

        await self._run(run)

    # --- trends (aggregates; see TrendsStore) ------------------------------

    async def site_hour_totals(self, start_ms: int, end_ms: int) -> list[HourTotal]:
        return await self._run(
            lambda db: [
                (int(h), float(o), int(n))
                for h, o, n in db.execute(
                    "SELECT hour_ms, occupied_s, sessions FROM occupancy_site_hourly"
                    " WHERE hour_ms >= ? AND hour_ms < ? ORDER BY hour_ms",
                    (start_ms, end_ms),
                )
            ]
        )

    async def daily_room_totals(
        self, day_start_ms: int, day_end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[RoomTotal]:
        where, args = _range(day_start_ms, day_end_ms, rooms)
        where = where.replace("hour_ms", "day_ms")
        return await self._run(
            lambda db: [
                (str(r), float(o), int(n))
                for r, o, n in db.execute(
                    f"SELECT room, SUM(occupied_s), SUM(sessions) FROM occupancy_daily {where}"
                    " GROUP BY room ORDER BY room",
                    args,
                )
            ]
        )

    async def site_session_length_counts(
        self, day_start_ms: int, day_end_ms: int
    ) -> dict[int, int]:
        return await self._run(
            lambda db: {
                int(m): int(n)
                for m, n in db.execute(
                    "SELECT minutes, SUM(count) FROM session_lengths_daily WHERE day_ms >= ?"
                    " AND day_ms < ? GROUP BY minutes",
                    (day_start_ms, day_end_ms),
                )
            }
        )

    async def rollup_hour_totals(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[HourTotal]:
        where, args = _range(start_ms, end_ms, rooms)
        return await self._run(
            lambda db: [
                (int(h), float(o), int(n))
                for h, o, n in db.execute(
                    f"SELECT hour_ms, SUM(occupied_s), SUM(sessions) FROM occupancy_hourly {where}"
                    " GROUP BY hour_ms ORDER BY hour_ms",
                    args,
                )
            ]
        )

    async def rollup_room_totals(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[RoomTotal]:
        where, args = _range(start_ms, end_ms, rooms)
        return await self._run(
            lambda db: [
                (str(r), float(o), int(n))
                for r, o, n in db.execute(
                    f"SELECT room, SUM(occupied_s), SUM(sessions) FROM occupancy_hourly {where}"
                    " GROUP BY room ORDER BY room",
                    args,
                )
            ]
        )

    async def session_length_counts(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> dict[int, int]:
        where, args = _range(start_ms, end_ms, rooms)
        return await self._run(
            lambda db: {
                int(m): int(n)
                for m, n in db.execute(
                    f"SELECT minutes, SUM(count) FROM session_lengths {where} GROUP BY minutes",
                    args,
                )
            }
        )

    async def telemetry_reports(self, start_ms: int, end_ms: int) -> list[TelemetryReport]:
        return await self._run(
            lambda db: [
                TelemetryReport(*row)
                for row in db.execute(
                    # Through `devices` (every device that wrote is there) so the
                    # (device, time_ms) index serves the range: no scan of a month
                    # (CROSS JOIN keeps SQLite from choosing the telemetry side first).
                    "SELECT t.device, t.time_ms, t.boot FROM devices d CROSS JOIN telemetry t"
                    " ON t.device = d.device AND t.time_ms >= ? AND t.time_ms < ?"
                    " ORDER BY t.device, t.time_ms",
                    (start_ms, end_ms),
                )
            ]
        )

    async def write_telemetry_rollups(
        self, start_ms: int, end_ms: int, rows: list[TelemetryHour]
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "DELETE FROM telemetry_hourly WHERE hour_ms >= ? AND hour_ms < ?",
                    (start_ms, end_ms),
                )
                db.executemany(
                    "INSERT INTO telemetry_hourly VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.device,
                            r.hour_ms,
                            r.points,
                            r.min_boot,
                            r.max_boot,
                            r.online_ms,
                            r.reboots,
                        )
                        for r in rows
                    ],
                )

        await self._run(run)

    async def telemetry_totals(self, start_ms: int, end_ms: int) -> list[DeviceReports]:
        return await self._run(
            lambda db: [
                (str(d), int(n), int(online), int(reboots))
                for d, n, online, reboots in db.execute(
                    "SELECT device, SUM(points), SUM(online_ms), SUM(reboots) FROM telemetry_hourly"
                    " WHERE hour_ms >= ? AND hour_ms < ? GROUP BY device ORDER BY device",
                    (start_ms, end_ms),
                )
            ]
        )

    async def prune_telemetry(self, before_ms: int) -> int:
        """Retention: delete raw telemetry older than `before_ms`; rows deleted."""

        def run(db: sqlite3.Connection) -> int:
            with db:
                return db.execute("DELETE FROM telemetry WHERE time_ms < ?", (before_ms,)).rowcount

        return await self._run(run)

    # --- reads ---------------------------------------------------------------

    async def occupancy_events(self, room: str | None = None) -> list[dict[str, Any]]:
        """Stored occupancy events in time order (all rooms, or one)."""

        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = "SELECT * FROM occupancy"
            args: tuple[Any, ...] = ()
            if room is not None:
                sql += " WHERE room=?"
                args = (room,)
            cur = db.execute(sql + " ORDER BY time_ms, device, boot, seq", args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

        return await self._run(run)

    async def seq_gaps(self) -> list[SeqGap]:
        """The loss audit: per device and boot, messages missing by seq (seq_audit.py)."""
        return await self._run(read_gaps)


def _range(start_ms: int, end_ms: int, rooms: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of a rollup table's hour range, optionally some rooms."""
    where = "WHERE hour_ms >= ? AND hour_ms < ?"
    args: tuple[Any, ...] = (start_ms, end_ms)
    if rooms is not None:
        where += f" AND room IN ({', '.join('?' * len(rooms))})" if rooms else " AND 0"
        args += tuple(rooms)
    return where, args


_INSERTS: dict[type, str] = {
    Occupancy: "INTO occupancy VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    Telemetry: "INTO telemetry VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    Call: "INTO calls VALUES (?,?,?,?,?,?,?,?,?,?)",
}


def _row(rec: Record) -> tuple[Any, ...]:
    msg = rec.message
    common = (rec.device, msg.boot, msg.seq, rec.room, rec.time_ms, msg.ts, rec.received_ms)
    if isinstance(msg, Occupancy):
        return (*common, msg.occupied, msg.source, msg.radar, msg.still_s)
    if isinstance(msg, Telemetry):
        extra = msg.model_extra or {}
        return (
            *common,
            msg.uptime_s,
            msg.rssi,
            msg.heap_free,
            msg.fw,
            json.dumps(extra, ensure_ascii=False) if extra else None,
        )
    if isinstance(msg, Call):
        # The raw call events; alerts are the server's (emergency-calls issue).
        return (*common, msg.action, msg.call_id, msg.status)
    raise StorageError(f"cannot store {type(msg).__name__}")


def _write(db: sqlite3.Connection, records: list[Record], *, live: bool = True) -> list[bool]:
    """One transaction for the batch. Fast path: one executemany per table,
    all rows new (the usual case). If any row was already there, roll that
    table back and insert row by row to learn which were duplicates."""
    groups: dict[type, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(type(rec.message), []).append(i)
    fresh = [True] * len(records)
    with db:
        db.execute("BEGIN")  # so the savepoints nest: one commit for the whole batch
        for model, indexes in groups.items():
            sql = _INSERTS.get(model)
            if sql is None:
                raise StorageError(f"cannot store {model.__name__}")
            rows = [_row(records[i]) for i in indexes]
            db.execute("SAVEPOINT batch")
            before = db.total_changes
            db.executemany("INSERT OR IGNORE " + sql, rows)
            if db.total_changes - before == len(rows):
                db.execute("RELEASE batch")
                continue
            db.execute("ROLLBACK TO batch")
            db.execute("RELEASE batch")
            for i, row in zip(indexes, rows, strict=True):
                fresh[i] = db.execute("INSERT OR IGNORE " + sql, row).rowcount == 1
        new = [rec for rec, is_new in zip(records, fresh, strict=True) if is_new]
        if not live:
            # Only known to exist (the telemetry rollup reads through `devices`).
            note_known(db, {r.device: (r.device, r.room) for r in new}.values())
            return fresh
        note_messages(db, new)
        note_seqs(
            db,
            ((r.device, r.message.boot, r.message.seq) for r in new),
            max((r.received_ms for r in records), default=0),
        )
    return fresh
