"""InfluxDB backend: spool first, then InfluxDB.

A batch is "durably handled" once it is in the spool (SQLite, in the data
dir) together with its `(device, boot, seq)` ledger entries, in one
transaction. A drainer sends the spool to InfluxDB in timestamp order, in
batches by size and interval, retrying with backoff and jitter while the
database is away; nothing waits only in memory. A row leaves the spool only
after InfluxDB accepted it; if the gateway dies in between, the row is sent
again and InfluxDB overwrites the identical point (see line_protocol).

We speak `/write` and `/query` over httpx rather than using influxdb-client:
that library speaks only the 2.x API (no InfluxQL, not 1.x) and keeps its
write batches in memory, which is exactly what must not happen here.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mamaroom.config import InfluxSettings
from mamaroom.contract import Telemetry
from mamaroom.logs import get_logger
from mamaroom.storage import DeviceReports, HourTotal, Record, RoomTotal, StorageError, dead_letters
from mamaroom.storage.dead_letters import NewDeadLetter
from mamaroom.storage.line_protocol import point_time_ns, to_line
from mamaroom.storage.rollups import (
    DAY_MS,
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

log = get_logger(__name__)

SPOOL_SCHEMA = """
-- Every message handled, by (device, boot, seq): the durable dedupe.
CREATE TABLE IF NOT EXISTS ledger (
    device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL, seen_ms INTEGER NOT NULL,
    PRIMARY KEY (device, boot, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_seen ON ledger (seen_ms);
-- Points not yet accepted by InfluxDB. Each gateway drains its own rows.
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY, gateway TEXT NOT NULL, time_ns INTEGER NOT NULL,
    rp TEXT NOT NULL, line TEXT NOT NULL, spooled_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_order ON spool (gateway, time_ns);
"""


class InfluxError(StorageError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SpoolStats:
    depth: int
    oldest_age_s: float
    refused: int


class InfluxClient:
    """The v1 HTTP API: `/write`, `/query`, `/ping`. Auth: a token (2.x/3.x)
    or username/password (1.x with auth on)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Token {settings.token}"} if settings.token else {}
        auth = (
            (settings.username, settings.password or "")
            if settings.username and not settings.token
            else None
        )
        self._http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            headers=headers,
            auth=auth,
            timeout=settings.timeout_s,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def ping(self) -> None:
        try:
            r = await self._http.get("/ping")
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB unreachable at {self.settings.url}: {exc!r}") from None
        if r.status_code != 204:
            raise InfluxError(f"InfluxDB /ping answered {r.status_code}", status=r.status_code)

    async def write(self, rp: str, lines: list[str]) -> None:
        params = {"db": self.settings.database, "precision": "ns"}
        if rp:
            params["rp"] = rp
        try:
            r = await self._http.post("/write", params=params, content="\n".join(lines))
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB unreachable at {self.settings.url}: {exc!r}") from None
        if r.status_code != 204:
            raise InfluxError(
                f"InfluxDB /write answered {r.status_code}: {r.text[:300]}", status=r.status_code
            )

    async def query(self, q: str, *, method: str = "GET") -> list[dict[str, Any]]:
        """InfluxQL; returns the `series` of the first statement (empty if none)."""
        params = {"db": self.settings.database, "q": q, "epoch": "ns"}
        try:
            if method == "POST":
                r = await self._http.post("/query", params=params)
            else:
                r = await self._http.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB unreachable at {self.settings.url}: {exc!r}") from None
        if r.status_code != 200:
            raise InfluxError(
                f"InfluxDB /query answered {r.status_code}: {r.text[:300]}", status=r.status_code
            )
        # Raw telemetry answers run to megabytes: parsed off the event loop.
        body = await asyncio.to_thread(r.json) if len(r.content) > 1 << 20 else r.json()
        result = body["results"][0]
        if "error" in result:
            raise InfluxError(f"InfluxQL error: {result['error']}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    async def ensure_schema(self, telemetry_retention_days: int) -> None:
        """1.x: the database and its retention policies. On 2.x/3.x the
        operator creates buckets instead (docs/storage.md); set `create = false`."""
        s = self.settings
        await self.query(f'CREATE DATABASE "{s.database}"', method="POST")
        if s.telemetry_rp:
            q = (
                f'CREATE RETENTION POLICY "{s.telemetry_rp}" ON "{s.database}" '
                f"DURATION {telemetry_retention_days}d REPLICATION 1"
            )
            try:
                await self.query(q, method="POST")
            except InfluxError as exc:
                if "already exists" not in str(exc):
                    raise
                await self.query(q.replace("CREATE", "ALTER", 1), method="POST")


_SPOOL_INSERT = "INSERT INTO spool (gateway, time_ns, rp, line, spooled_ms) VALUES (?, ?, ?, ?, ?)"


class InfluxSpool(SqliteDatabase):
    component = "influx_spool"
    schema = SPOOL_SCHEMA + AUDIT_SCHEMA + dead_letters.SCHEMA
    checkpoint_pages = 10_000  # as store.sqlite (embedded.py): checkpoints off most commits

    def migrate(self, db: sqlite3.Connection) -> None:
        migrate_audit(db)
        # Points refused before dead letters existed: move them there.
        if db.execute("SELECT 1 FROM sqlite_master WHERE name='refused'").fetchone():
            db.executescript(dead_letters.SCHEMA)  # a spool from before dead letters
            db.execute(
                "INSERT INTO dead_letters (at_ms, source, reason, device, topic, payload)"
                " SELECT refused_ms, 'influxdb', error, NULL, rp, line FROM refused"
            )
            db.execute("DROP TABLE refused")

    async def add(
        self, gateway: str, records: list[Record], rps: list[str], lines: list[str], now_ms: int
    ) -> list[bool]:
        """Ledger and spool in one transaction. Fast path: all new (the usual
        case), one executemany per table; if some were already in the ledger,
        roll back and go row by row to learn which."""
        keys = [
            (rec.device, rec.message.boot, rec.message.seq, rec.time_ms, now_ms) for rec in records
        ]
        points = [
            (gateway, point_time_ns(rec), rp, line, now_ms)
            for rec, rp, line in zip(records, rps, lines, strict=True)
        ]

        def run(db: sqlite3.Connection) -> list[bool]:
            with db:
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO ledger VALUES (?, ?, ?, ?, ?)", keys)
                if db.total_changes - before == len(keys):
                    db.executemany(_SPOOL_INSERT, points)
                    # The loss audit, in the ledger's transaction: counted once, when kept.
                    note_seqs(db, ((k[0], k[1], k[2]) for k in keys), now_ms)
                    return [True] * len(keys)
                db.rollback()
            fresh = []
            with db:
                for key, point in zip(keys, points, strict=True):
                    is_new = (
                        db.execute(
                            "INSERT OR IGNORE INTO ledger VALUES (?, ?, ?, ?, ?)", key
                        ).rowcount
                        == 1
                    )
                    if is_new:
                        db.execute(_SPOOL_INSERT, point)
                    fresh.append(is_new)
                # The loss audit, in the ledger's transaction: counted once, when kept.
                note_seqs(
                    db,
                    (
                        (r.device, r.message.boot, r.message.seq)
                        for r, is_new in zip(records, fresh, strict=True)
                        if is_new
                    ),
                    now_ms,
                )
            return fresh

        return await self._run(run)

    async def oldest(self, gateway: str, limit: int) -> list[tuple[int, str, str]]:
        return await self._run(
            lambda db: db.execute(
                "SELECT id, rp, line FROM spool WHERE gateway=? ORDER BY time_ns, id LIMIT ?",
                (gateway, limit),
            ).fetchall()
        )

    async def remove(self, ids: list[int]) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("DELETE FROM spool WHERE id=?", [(i,) for i in ids])

        await self._run(run)

    async def refuse(self, rows: list[tuple[int, str, str]], error: str, now_ms: int) -> None:
        """Points InfluxDB refused: out of the spool, into the dead letters."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                dead_letters.add(
                    db,
                    [
                        NewDeadLetter("influxdb", error, _device_of(line), rp or None, line)
                        for _, rp, line in rows
                    ],
                    now_ms,
                )
                db.executemany("DELETE FROM spool WHERE id=?", [(i,) for i, _, _ in rows])

        await self._run(run)

    async def stats(self, gateway: str, now_ms: int) -> SpoolStats:
        def run(db: sqlite3.Connection) -> SpoolStats:
            depth, oldest = db.execute(
                "SELECT COUNT(*), MIN(spooled_ms) FROM spool WHERE gateway=?", (gateway,)
            ).fetchone()
            refused = dead_letters.count_open(db)
            age = (now_ms - oldest) / 1000 if oldest is not None else 0.0
            return SpoolStats(depth, max(age, 0.0), refused)

        return await self._run(run)

    async def seq_gaps(self) -> list[SeqGap]:
        """The loss audit: per device and boot, messages missing by seq (seq_audit.py)."""
        return await self._run(read_gaps)

    async def forget_before(self, seen_before_ms: int) -> int:
        def run(db: sqlite3.Connection) -> int:
            with db:
                return db.execute(
                    "DELETE FROM ledger WHERE seen_ms < ?", (seen_before_ms,)
                ).rowcount

        return await self._run(run)


def _device_of(line: str) -> str | None:
    """The `device` tag of a line of ours (`measurement,...,device=x,...`)."""
    match = re.search(r",device=((?:[^,\\ ]|\\.)*)", line)
    return match.group(1) if match else None


BatchHook = Callable[[int, float], None]
#: SHOW TAG VALUES takes InfluxDB 1.6 up to a second; rooms are added rarely.
ROOMS_PRESENT_TTL_S = 300.0


class InfluxStore:
    """The `Store` for InfluxDB. `run_drainer()` must run while the store is open."""

    def __init__(
        self,
        settings: InfluxSettings,
        spool_path: Path,
        *,
        gateway: str,
        telemetry_retention_days: int = 30,
        on_batch: BatchHook | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.spool = InfluxSpool(spool_path)
        self.client = InfluxClient(settings)
        self._retention_days = telemetry_retention_days
        self._on_batch = on_batch
        self._on_error = on_error
        self._wake = asyncio.Event()
        self._schema_ready = not settings.create
        self.reachable = False
        self._delete_warned = False
        #: The rooms each measurement holds, with when that was asked.
        self._rooms_present: dict[str, tuple[float, set[str]]] = {}

    async def open(self) -> None:
        await self.spool.open()

    async def close(self) -> None:
        await self.client.close()
        await self.spool.close()

    async def ping(self) -> None:
        await self.spool.ping()  # durable even while InfluxDB is away

    async def write(self, records: list[Record]) -> list[bool]:
        rps = [
            self.settings.telemetry_rp
            if isinstance(r.message, Telemetry)
            else self.settings.events_rp
            for r in records
        ]
        lines = [to_line(r) for r in records]
        fresh = await self.spool.add(self.gateway, records, rps, lines, int(time.time() * 1000))
        if any(fresh):
            self._wake.set()
        return fresh

    async def data_times(
        self, start_ms: int, end_ms: int, boots: tuple[int, int] | None = None
    ) -> tuple[int, int] | None:
        """The first and last time of a stored occupancy or call message in
        [start, end), of a boot outside [boots) when given; None if there is
        none. (What generated history could interleave with; telemetry of
        two sources only adds reports.)"""
        where = f"time >= {start_ms}ms AND time < {end_ms}ms"
        if boots is not None:
            where += f' AND ("boot" < {boots[0]} OR "boot" >= {boots[1]})'
        if not self._schema_ready:  # a database not made yet holds nothing
            await self.client.ensure_schema(self._retention_days)
            self._schema_ready = True
        times: list[int] = []
        for src in (self._measurement("occupancy"), self._measurement("call")):
            for fn in ("first", "last"):  # one selector per query: it returns its point's time
                series = await self.client.query(f'SELECT {fn}("seq") FROM {src} WHERE {where}')
                times += [int(v[0]) // 1_000_000 for s in series for v in s["values"]]
        return (min(times), max(times)) if times else None

    async def seq_gaps(self) -> list[SeqGap]:
        """The loss audit, kept with the dedupe ledger (seq_audit.py)."""
        return await self.spool.seq_gaps()

    async def stats(self) -> SpoolStats:
        return await self.spool.stats(self.gateway, int(time.time() * 1000))

    def _measurement(self, name: str) -> str:
        rp = self.settings.events_rp
        return f'"{rp}"."{name}"' if rp else f'"{name}"'

    async def occupancy_window(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[OccupancyEvent], dict[str, bool]]:
        """Occupancy events in [start, end) and each room's state just before."""
        src = self._measurement("occupancy")
        events = []
        for s in await self.client.query(
            f'SELECT "occupied" FROM {src} WHERE time >= {start_ms}ms AND '
            f'time < {end_ms}ms GROUP BY "room"'
        ):
            room = s["tags"]["room"]
            events += [OccupancyEvent(room, t // 1_000_000, bool(o)) for t, o in s["values"]]
        before = {}
        for s in await self.client.query(
            f'SELECT last("occupied") FROM {src} WHERE time < {start_ms}ms GROUP BY "room"'
        ):
            before[s["tags"]["room"]] = bool(s["values"][0][1])
        return events, before

    async def write_rollups(self, rows: list[HourRollup]) -> None:
        """Straight to InfluxDB (no spool): rollups are recomputed from events
        if a write fails. Same room and hour = same point, so reruns overwrite."""
        lines = [
            f"occupancy_hourly,room={r.room} occupied_s={float(r.occupied_s)!r},"
            f"sessions={r.sessions}i {r.hour_ms * 1_000_000}"
            for r in rows
        ]
        for i in range(0, len(lines), self.settings.batch_size):
            await self.client.write(
                self.settings.events_rp, lines[i : i + self.settings.batch_size]
            )

    async def rollups(self, start_ms: int, end_ms: int) -> list[HourRollup]:
        out = []
        for s in await self.client.query(
            f'SELECT "occupied_s", "sessions" FROM {self._measurement("occupancy_hourly")} '
            f'WHERE time >= {start_ms}ms AND time < {end_ms}ms GROUP BY "room"'
        ):
            room = s["tags"]["room"]
            out += [HourRollup(room, t // 1_000_000, float(o), int(n)) for t, o, n in s["values"]]
        return sorted(out, key=lambda r: (r.room, r.hour_ms))

    async def write_session_rollups(
        self, start_ms: int, end_ms: int, rows: list[SessionRollup]
    ) -> None:
        """Delete the hours' points, then write: a length that changed (late
        data) must not leave its old point behind. Straight to InfluxDB, as
        write_rollups. (DELETE is InfluxQL of 1.x; see docs/storage.md.)"""
        await self._delete("session_lengths", start_ms, end_ms)
        lines = [
            f"session_lengths,minutes={r.minutes},room={r.room} count={r.count}i"
            f" {r.hour_ms * 1_000_000}"
            for r in rows
        ]
        for i in range(0, len(lines), self.settings.batch_size):
            await self.client.write(
                self.settings.events_rp, lines[i : i + self.settings.batch_size]
            )

    async def _delete(self, measurement: str, start_ms: int, end_ms: int) -> None:
        try:
            await self.client.query(
                f'DELETE FROM "{measurement}" WHERE time >= {start_ms}ms AND time < {end_ms}ms',
                method="POST",
            )
        except InfluxError as exc:
            if exc.status is None and "unreachable" in str(exc):
                raise
            if not self._delete_warned:  # 2.x's v1 API and 3.x refuse InfluxQL DELETE
                log.warning(
                    "InfluxDB refused DELETE; rollups are overwritten, not replaced",
                    error=str(exc)[:200],
                )
                self._delete_warned = True

    async def _write_lines(self, lines: list[str]) -> None:
        for i in range(0, len(lines), self.settings.batch_size):
            await self.client.write(
                self.settings.events_rp, lines[i : i + self.settings.batch_size]
            )

    async def session_rollups(self, start_ms: int, end_ms: int) -> list[SessionRollup]:
        out = [
            SessionRollup(s["tags"]["room"], t // 1_000_000, int(s["tags"]["minutes"]), int(n))
            for s in await self.client.query(
                f'SELECT "count" FROM {self._measurement("session_lengths")} WHERE time >= '
                f'{start_ms}ms AND time < {end_ms}ms GROUP BY "room", "minutes"'
            )
            for t, n in s["values"]
        ]
        return sorted(out, key=lambda r: (r.room, r.hour_ms, r.minutes))

    async def write_coarse_rollups(
        self, day_start_ms: int, day_end_ms: int, rows: CoarseRollups
    ) -> None:
        for name in ("occupancy_site_hourly", "occupancy_daily", "session_lengths_daily"):
            await self._delete(name, day_start_ms, day_end_ms)
        await self._write_lines(
            [
                f"occupancy_site_hourly occupied_s={float(r.occupied_s)!r},sessions={r.sessions}i"
                f" {r.hour_ms * 1_000_000}"
                for r in rows.site_hours
            ]
            + [
                f"occupancy_daily,room={r.room} occupied_s={float(r.occupied_s)!r},"
                f"sessions={r.sessions}i {r.day_ms * 1_000_000}"
                for r in rows.days
            ]
            + [
                f"session_lengths_daily,minutes={r.minutes} count={r.count}i {r.day_ms * 1_000_000}"
                for r in rows.site_sessions
            ]
        )

    # --- trends (aggregates computed by InfluxDB; see TrendsStore) ----------

    async def site_hour_totals(self, start_ms: int, end_ms: int) -> list[HourTotal]:
        series = await self.client.query(
            f'SELECT "occupied_s", "sessions" FROM {self._measurement("occupancy_site_hourly")}'
            f" WHERE time >= {start_ms}ms AND time < {end_ms}ms"
        )
        return [(t // 1_000_000, float(o), int(n)) for s in series for t, o, n in s["values"]]

    async def daily_room_totals(
        self, day_start_ms: int, day_end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[RoomTotal]:
        if rooms is not None and not rooms:
            return []
        where = await self._where("occupancy_daily", day_start_ms, day_end_ms, rooms)
        series = await self.client.query(
            f'SELECT sum("occupied_s"), sum("sessions") FROM '
            f'{self._measurement("occupancy_daily")} {where} GROUP BY "room"'
        )
        return sorted(
            (s["tags"]["room"], float(v[1]), int(v[2])) for s in series for v in s["values"]
        )

    async def site_session_length_counts(
        self, day_start_ms: int, day_end_ms: int
    ) -> dict[int, int]:
        series = await self.client.query(
            f'SELECT sum("count") FROM {self._measurement("session_lengths_daily")} WHERE time'
            f' >= {day_start_ms}ms AND time < {day_end_ms}ms GROUP BY "minutes"'
        )
        return {int(s["tags"]["minutes"]): int(v[1]) for s in series for v in s["values"]}

    async def _where(
        self, measurement: str, start_ms: int, end_ms: int, rooms: Sequence[str] | None
    ) -> str:
        """The time range, and the rooms as a tag regex (InfluxDB selects series
        by regex through its index; a chain of 190 ORs is evaluated point by
        point and takes seconds). No filter when the measurement holds no
        other rooms, the usual case."""
        where = f"WHERE time >= {start_ms}ms AND time < {end_ms}ms"
        if rooms is None:
            return where
        cached = self._rooms_present.get(measurement)
        if cached is None or time.monotonic() - cached[0] > ROOMS_PRESENT_TTL_S:
            cached = (
                time.monotonic(),
                {
                    v[1]
                    for s in await self.client.query(
                        f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "room"'
                    )
                    for v in s["values"]
                },
            )
            self._rooms_present[measurement] = cached
        if cached[1] <= set(rooms):
            return where
        alternatives = "|".join(re.escape(r).replace("/", "\\/") for r in sorted(rooms))
        return where + f' AND "room" =~ /^({alternatives})$/'

    async def rollup_hour_totals(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[HourTotal]:
        if rooms is not None and not rooms:
            return []
        where = await self._where("occupancy_hourly", start_ms, end_ms, rooms)
        series = await self.client.query(
            f'SELECT sum("occupied_s"), sum("sessions") FROM '
            f"{self._measurement('occupancy_hourly')} {where} GROUP BY time(1h) fill(none)"
        )
        return [(t // 1_000_000, float(o), int(n)) for s in series for t, o, n in s["values"]]

    async def rollup_room_totals(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> list[RoomTotal]:
        if rooms is not None and not rooms:
            return []
        where = await self._where("occupancy_hourly", start_ms, end_ms, rooms)
        series = await self.client.query(
            f'SELECT sum("occupied_s"), sum("sessions") FROM '
            f'{self._measurement("occupancy_hourly")} {where} GROUP BY "room"'
        )
        return sorted(
            (s["tags"]["room"], float(v[1]), int(v[2])) for s in series for v in s["values"]
        )

    async def session_length_counts(
        self, start_ms: int, end_ms: int, rooms: Sequence[str] | None = None
    ) -> dict[int, int]:
        if rooms is not None and not rooms:
            return {}
        series = await self.client.query(
            f'SELECT sum("count") FROM {self._measurement("session_lengths")} '
            f'{await self._where("session_lengths", start_ms, end_ms, rooms)} GROUP BY "minutes"'
        )
        return {int(s["tags"]["minutes"]): int(v[1]) for s in series for v in s["values"]}

    async def telemetry_reports(self, start_ms: int, end_ms: int) -> list[TelemetryReport]:
        rp = self.settings.telemetry_rp
        src = f'"{rp}"."telemetry"' if rp else '"telemetry"'
        out: list[TelemetryReport] = []
        # A day at a time: a day of 190 nodes reporting every minute is
        # 270,000 points, about 3 s for InfluxDB 1.6 to send.
        for day in range(start_ms, end_ms, DAY_MS):
            series = await self.client.query(
                f'SELECT "boot" FROM {src} WHERE time >= {day}ms AND time < '
                f'{min(day + DAY_MS, end_ms)}ms GROUP BY "device"'
            )
            # Point times are the message's ms + seq % 1,000,000 ns (line_protocol).
            out += [
                TelemetryReport(s["tags"]["device"], t // 1_000_000, int(boot))
                for s in series
                for t, boot in s["values"]
            ]
        return sorted(out, key=lambda r: (r.device, r.time_ms))

    async def write_telemetry_rollups(
        self, start_ms: int, end_ms: int, rows: list[TelemetryHour]
    ) -> None:
        await self._delete("telemetry_hourly", start_ms, end_ms)
        await self._write_lines(
            [
                f"telemetry_hourly,device={r.device} points={r.points}i,min_boot={r.min_boot}i,"
                f"max_boot={r.max_boot}i,online_ms={r.online_ms}i,reboots={r.reboots}i"
                f" {r.hour_ms * 1_000_000}"
                for r in rows
            ]
        )

    async def telemetry_totals(self, start_ms: int, end_ms: int) -> list[DeviceReports]:
        series = await self.client.query(
            f'SELECT sum("points"), sum("online_ms"), sum("reboots") FROM '
            f"{self._measurement('telemetry_hourly')} WHERE time >= {start_ms}ms AND "
            f'time < {end_ms}ms GROUP BY "device"'
        )
        # Rollups written before online time was measured have neither field:
        # None (the trends service counts their reports at the configured interval).
        return sorted(
            (
                s["tags"]["device"],
                int(v[1]),
                None if v[2] is None else int(v[2]),
                None if v[3] is None else int(v[3]),
            )
            for s in series
            for v in s["values"]
        )

    async def run_drainer(self) -> None:
        """Send the spool to InfluxDB, oldest first, for as long as the store is open."""
        delay = 0.5
        while True:
            try:
                if not self._schema_ready:
                    await self.client.ensure_schema(self._retention_days)
                    self._schema_ready = True
                sent = await self._drain_once()
                if not self.reachable:
                    log.info("InfluxDB reachable", url=self.settings.url)
                self.reachable = True
                delay = 0.5
                if sent < self.settings.batch_size:
                    # A partial batch: wait for more, but never longer than the interval.
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.settings.flush_interval_s)
                    except TimeoutError:
                        pass
            except InfluxError as exc:
                if self._on_error:
                    self._on_error()
                if self.reachable or delay == 0.5:
                    log.error(
                        "InfluxDB write failed; points stay in the spool",
                        error=str(exc),
                        retry_in_s=round(delay, 1),
                    )
                self.reachable = False
                await asyncio.sleep(delay * random.uniform(0.7, 1.3))
                delay = min(delay * 2, 30.0)
            except StorageError as exc:
                # The spool itself (locked, disk full): the points are safe in
                # it; retry rather than let the drainer, and the gateway, die.
                log.error(
                    "spool not readable; retrying", error=str(exc), retry_in_s=round(delay, 1)
                )
                await asyncio.sleep(delay * random.uniform(0.7, 1.3))
                delay = min(delay * 2, 30.0)

    async def _drain_once(self) -> int:
        rows = await self.spool.oldest(self.gateway, self.settings.batch_size)
        if not rows:
            return 0
        # One request per retention policy, in order of first appearance.
        by_rp: dict[str, list[tuple[int, str, str]]] = {}
        for row in rows:
            by_rp.setdefault(row[1], []).append(row)
        for rp, group in by_rp.items():
            started = time.perf_counter()
            try:
                await self.client.write(rp, [line for _, _, line in group])
            except InfluxError as exc:
                if exc.status == 400 and "beyond retention policy" in str(exc):
                    # The rest was written; these are older than the retention
                    # policy keeps, which is what the operator asked for.
                    log.warning(
                        "InfluxDB dropped points older than its retention policy",
                        rp=rp or "(default)",
                        error=str(exc)[:200],
                    )
                elif exc.status == 400:
                    await self._isolate_refused(rp, group, str(exc))
                    continue
                else:
                    raise
            await self.spool.remove([i for i, _, _ in group])
            if self._on_batch:
                self._on_batch(len(group), time.perf_counter() - started)
        return len(rows)

    async def _isolate_refused(
        self, rp: str, group: list[tuple[int, str, str]], error: str
    ) -> None:
        """A 400 means some line is malformed: send one by one, keep the refused aside."""
        for row in group:
            try:
                await self.client.write(rp, [row[2]])
                await self.spool.remove([row[0]])
            except InfluxError as exc:
                if exc.status != 400:
                    raise
                if "beyond retention policy" in str(exc):
                    await self.spool.remove([row[0]])
                    continue
                log.error(
                    "InfluxDB refused a point; kept as a dead letter (`mamaroom dead-letters`)",
                    error=str(exc)[:300],
                )
                await self.spool.refuse([row], str(exc), int(time.time() * 1000))
