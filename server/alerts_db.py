"""Alerts and their timelines, in the server's database (survives restarts)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from typing import Any, cast

from mamaroom.storage import StorageError
from mamaroom.storage.sqlite_base import SqliteDatabase
from server.services.alert_model import (
    ORDER,
    Alert,
    AlertKind,
    AlertStatus,
    Priority,
    TimelineEntry,
    with_enums,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, priority TEXT NOT NULL,
    room TEXT, device TEXT,
    call_id TEXT,                   -- calls only; retransmits find the same open alert
    status TEXT NOT NULL,
    raised_at_ms INTEGER NOT NULL,
    acknowledged_at_ms INTEGER, acknowledged_by TEXT,
    arrived_at_ms INTEGER,
    resolved_at_ms INTEGER, resolved_by TEXT,
    escalation_level INTEGER NOT NULL DEFAULT 0,
    next_page_ms INTEGER,           -- persisted escalation timer: survives a restart
    test INTEGER NOT NULL DEFAULT 0,
    subject TEXT,                   -- what a non-call alert is about: a device, building, channel
    paging TEXT,                    -- each page target's last outcome (JSON), see note_paged
    nobody INTEGER NOT NULL DEFAULT 0  -- a tier started with nobody to page
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (status, device);
CREATE INDEX IF NOT EXISTS alerts_call ON alerts (device, call_id);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL REFERENCES alerts(id),
    at_ms INTEGER NOT NULL, what TEXT NOT NULL, who TEXT, channel TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, at_ms);
-- Further presses in a room whose call is open (other call_ids, other nodes)
-- join that call: one alert and one escalation per room.
CREATE TABLE IF NOT EXISTS joined_calls (
    device TEXT NOT NULL, call_id TEXT NOT NULL, alert_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL, PRIMARY KEY (device, call_id)
);
-- Who escalates when several servers share this database: one holder at a time.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms INTEGER NOT NULL
);
-- Rooms being commissioned: their calls page only the tester, marked as tests.
CREATE TABLE IF NOT EXISTS test_mode (
    room TEXT PRIMARY KEY, tester_pager TEXT NOT NULL, until_ms INTEGER NOT NULL,
    started_by TEXT
);
"""

ALERT_COLUMNS = (
    "id",
    "kind",
    "priority",
    "room",
    "device",
    "call_id",
    "status",
    "raised_at_ms",
    "acknowledged_at_ms",
    "acknowledged_by",
    "arrived_at_ms",
    "resolved_at_ms",
    "resolved_by",
    "escalation_level",
    "next_page_ms",
    "test",
    "subject",
    "paging",
    "nobody",
)
#: Columns added after the first release: (name, declaration), added on open.
ADDED_COLUMNS = (("paging", "TEXT"), ("nobody", "INTEGER NOT NULL DEFAULT 0"))
#: An alert past its retention: closed, and closed before a time (the ? twice).
_CLOSED_BEFORE = (
    "status IN ('resolved', 'cancelled')"
    " AND COALESCE(resolved_at_ms, acknowledged_at_ms, raised_at_ms) < ?"
)
#: What an alert's deletion counts, in this order.
RETENTION_COUNTS = ("alerts", "alert_events", "joined_calls")
#: A journalled call and a stored one of the same device and call_id raised
#: this close together are one call (call ids are unique per node boot).
JOURNAL_MATCH_MS = 5 * 60_000


def _write_lock(db: sqlite3.Connection) -> None:
    """Take the database's write lock now, not at the first write: a
    look-then-insert by two servers at once would otherwise both see
    nothing and both insert (sqlite3 starts its implicit transaction only
    at the first INSERT)."""
    if not db.in_transaction:
        db.execute("BEGIN IMMEDIATE")


def _alert(row: tuple[Any, ...]) -> Alert:
    raw = dict(zip(ALERT_COLUMNS, row, strict=True))
    raw["paging"] = json.loads(raw["paging"]) if raw["paging"] else {}
    raw["nobody"] = bool(raw["nobody"])
    raw["test"] = bool(raw["test"])
    return with_enums(raw)


class AlertsDb(SqliteDatabase):
    component = "alerts"
    schema = SCHEMA

    async def open(self) -> None:
        await self._upgrade()
        await super().open()

    async def _upgrade(self) -> None:
        """Databases made before a column existed get it (SQLite has no
        ADD COLUMN IF NOT EXISTS); the schema's CREATE then finds the table."""

        def run() -> None:
            if not self.path.exists():
                return
            db = sqlite3.connect(self.path, timeout=10)
            try:
                have = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
                if not have:
                    return
                with db:
                    for name, decl in ADDED_COLUMNS:
                        if name not in have:
                            db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {decl}")
            finally:
                db.close()

        try:
            await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    async def raise_call(
        self, *, room: str, device: str, call_id: str, at_ms: int, channel: str, test: bool
    ) -> tuple[Alert, bool]:
        """The open alert for this device's `call_id`, created if there is none;
        (alert, created). A press for a call already resolved raises a new
        alert: a node may reuse an id (its boot counter reset), and paging
        twice is safer than telling a new emergency it is over. Committed
        before it returns: only then may the node be told `received`."""

        def run(db: sqlite3.Connection) -> tuple[Alert, bool]:
            cols = ", ".join(ALERT_COLUMNS)
            with db:
                _write_lock(db)  # two servers: one decides "new or joined" at a time
                row = db.execute(
                    f"SELECT {cols} FROM alerts WHERE device=? AND call_id=?"
                    " AND status NOT IN ('resolved', 'cancelled') ORDER BY id DESC LIMIT 1",
                    (device, call_id),
                ).fetchone()
                if row is None:  # a press that already joined the room's call
                    row = db.execute(
                        f"SELECT {cols} FROM alerts WHERE id=(SELECT alert_id FROM joined_calls"
                        " WHERE device=? AND call_id=?) AND status NOT IN ('resolved',"
                        " 'cancelled')",
                        (device, call_id),
                    ).fetchone()
                if row is None:  # the room's open call: this press joins it
                    row = db.execute(
                        f"SELECT {cols} FROM alerts WHERE kind='call' AND room=? AND status NOT"
                        " IN ('resolved', 'cancelled') ORDER BY id LIMIT 1",
                        (room,),
                    ).fetchone()
                    if row is not None:
                        db.execute(
                            "INSERT OR REPLACE INTO joined_calls VALUES (?, ?, ?, ?)",
                            (device, call_id, row[0], at_ms),
                        )
                        db.execute(
                            "INSERT INTO alert_events (alert_id, at_ms, what, who,"
                            " channel, detail) VALUES (?, ?, 'joined', ?, ?, ?)",
                            (
                                row[0],
                                at_ms,
                                device,
                                channel,
                                f"another press in the room (call {call_id})",
                            ),
                        )
                created = row is None
                if created:
                    cur = db.execute(
                        "INSERT INTO alerts (kind, priority, room, device, call_id, status,"
                        " raised_at_ms, test) VALUES ('call', 'high', ?, ?, ?, 'open', ?, ?)",
                        (room, device, call_id, at_ms, test),
                    )
                    row = db.execute(
                        f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id=?",
                        (cur.lastrowid,),
                    ).fetchone()
                if created:
                    db.execute(
                        "INSERT INTO alert_events (alert_id, at_ms, what, who, channel)"
                        " VALUES (?, ?, 'raised', ?, ?)",
                        (row[0], at_ms, device, channel),
                    )
            return _alert(row), created

        return await self._run(run)

    async def raise_once(
        self,
        kind: AlertKind,
        subject: str,
        *,
        priority: Priority,
        at_ms: int,
        detail: str,
        channel: str,
        room: str | None = None,
        device: str | None = None,
    ) -> tuple[Alert, bool]:
        """An alert of `kind` about `subject` (a channel, device, building),
        unless one is already open; (alert, created)."""

        def run(db: sqlite3.Connection) -> tuple[Alert, bool]:
            with db:
                _write_lock(db)
                row = db.execute(
                    f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE kind=?"
                    " AND subject=? AND status NOT IN ('resolved', 'cancelled')",
                    (kind, subject),
                ).fetchone()
                if row is not None:
                    return _alert(row), False
                cur = db.execute(
                    "INSERT INTO alerts (kind, priority, status, raised_at_ms,"
                    " subject, room, device) VALUES (?, ?, 'open', ?, ?, ?, ?)",
                    (kind, priority, at_ms, subject, room, device),
                )
                db.execute(
                    "INSERT INTO alert_events (alert_id, at_ms, what, channel, detail)"
                    " VALUES (?, ?, 'raised', ?, ?)",
                    (cur.lastrowid, at_ms, channel, detail),
                )
                row = db.execute(
                    f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id=?", (cur.lastrowid,)
                ).fetchone()
            return _alert(row), True

        return await self._run(run)

    async def advance(
        self, alert_id: int, status: AlertStatus, *, at_ms: int, who: str | None, channel: str
    ) -> tuple[Alert, bool]:
        """Move an alert forwards to `status`; (alert, changed). Going back is a no-op."""

        def run(db: sqlite3.Connection) -> tuple[Alert, bool]:
            with db:
                row = db.execute(
                    f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id=?", (alert_id,)
                ).fetchone()
                if row is None:
                    raise KeyError(alert_id)
                alert = _alert(row)
                if ORDER[status] <= ORDER[alert["status"]]:
                    return alert, False
                sets: dict[str, Any] = {"status": status}
                if status == "acknowledged":
                    sets |= {"acknowledged_at_ms": at_ms, "acknowledged_by": who}
                elif status == "arrived":
                    sets["arrived_at_ms"] = at_ms
                    if alert["acknowledged_at_ms"] is None:  # staff came straight in
                        sets |= {"acknowledged_at_ms": at_ms, "acknowledged_by": who}
                elif status in ("resolved", "cancelled"):
                    sets |= {"resolved_at_ms": at_ms, "resolved_by": who}
                db.execute(
                    f"UPDATE alerts SET {', '.join(f'{k}=?' for k in sets)} WHERE id=?",
                    (*sets.values(), alert_id),
                )
                db.execute(
                    "INSERT INTO alert_events (alert_id, at_ms, what, who, channel)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (alert_id, at_ms, status, who, channel),
                )
            return cast(Alert, {**alert, **sets}), True

        return await self._run(run)

    async def note(
        self,
        alert_id: int,
        what: str,
        *,
        at_ms: int,
        who: str | None,
        channel: str,
        detail: str | None = None,
    ) -> None:
        """A timeline entry that does not change the status (e.g. `shown`)."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO alert_events (alert_id, at_ms, what, who, channel,"
                    " detail) VALUES (?, ?, ?, ?, ?, ?)",
                    (alert_id, at_ms, what, who, channel, detail),
                )

        await self._run(run)

    async def note_paged(
        self, alert_id: int, *, channel: str, target: str, ok: bool, at_ms: int, detail: str
    ) -> None:
        """A page's outcome: a timeline entry, and the target's last outcome in
        `paging` (what the console shows: "paged 101 ✓", "page to 101 failed")."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO alert_events (alert_id, at_ms, what, who, channel,"
                    " detail) VALUES (?, ?, ?, ?, ?, ?)",
                    (alert_id, at_ms, "paged" if ok else "page failed", target, channel, detail),
                )
                db.execute(
                    "UPDATE alerts SET paging = json_set(coalesce(paging, '{}'),"
                    " '$.' || json_quote(?), json(?)) WHERE id=?",
                    (target, json.dumps({"channel": channel, "ok": ok, "at_ms": at_ms}), alert_id),
                )

        await self._run(run)

    async def note_nobody(self, alert_id: int, *, at_ms: int, detail: str) -> None:
        """A tier started with nobody it could page: flagged for the console."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO alert_events (alert_id, at_ms, what, channel, detail)"
                    " VALUES (?, ?, 'nobody to page', 'escalation', ?)",
                    (alert_id, at_ms, detail),
                )
                db.execute("UPDATE alerts SET nobody=1 WHERE id=?", (alert_id,))

        await self._run(run)

    async def commit_journaled(self, alert: Alert) -> tuple[Alert, bool]:
        """A call kept in the journal while the database refused writes, with
        its status and timeline so far; (alert, created). Exactly once: a call
        already committed (the same device and call_id raised within
        JOURNAL_MATCH_MS: a late commit of the same attempt, or another server
        sharing this database that journalled the same press) is returned as it is."""

        def run(db: sqlite3.Connection) -> tuple[Alert, bool]:
            cols = ", ".join(ALERT_COLUMNS)
            with db:
                _write_lock(db)  # two servers: one decides "new or joined" at a time
                row = db.execute(
                    f"SELECT {cols} FROM alerts WHERE device=? AND call_id=? AND"
                    " kind='call' AND raised_at_ms BETWEEN ? AND ?",
                    (
                        alert["device"],
                        alert["call_id"],
                        alert["raised_at_ms"] - JOURNAL_MATCH_MS,
                        alert["raised_at_ms"] + JOURNAL_MATCH_MS,
                    ),
                ).fetchone()
                if row is not None:
                    return _alert(row), False
                cur = db.execute(
                    "INSERT INTO alerts (kind, priority, room, device, call_id, status,"
                    " raised_at_ms, acknowledged_at_ms, acknowledged_by, arrived_at_ms,"
                    " resolved_at_ms, resolved_by, escalation_level, next_page_ms, test, paging,"
                    " nobody) VALUES ('call', 'high', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert["room"],
                        alert["device"],
                        alert["call_id"],
                        alert["status"],
                        alert["raised_at_ms"],
                        alert.get("acknowledged_at_ms"),
                        alert.get("acknowledged_by"),
                        alert.get("arrived_at_ms"),
                        alert.get("resolved_at_ms"),
                        alert.get("resolved_by"),
                        alert.get("escalation_level", 0),
                        alert.get("next_page_ms"),
                        bool(alert.get("test")),
                        json.dumps(alert.get("paging") or {}),
                        bool(alert.get("nobody")),
                    ),
                )
                db.executemany(
                    "INSERT INTO alert_events (alert_id, at_ms, what, who, channel, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            cur.lastrowid,
                            e["at_ms"],
                            e["what"],
                            e.get("who"),
                            e.get("channel"),
                            e.get("detail"),
                        )
                        for e in alert.get("timeline", [])
                    ],
                )
                row = db.execute(
                    f"SELECT {cols} FROM alerts WHERE id=?", (cur.lastrowid,)
                ).fetchone()
            return _alert(row), True

        return await self._run(run)

    async def lease(self, name: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        """Take or renew the lease `name` for `holder` unless another holds it
        unexpired; True if `holder` has it now."""

        def run(db: sqlite3.Connection) -> bool:
            with db:
                db.execute(
                    "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE"
                    " SET holder=excluded.holder, until_ms=excluded.until_ms"
                    " WHERE leases.holder=excluded.holder OR leases.until_ms < ?",
                    (name, holder, now_ms + ttl_ms, now_ms),
                )
                row = db.execute("SELECT holder FROM leases WHERE name=?", (name,)).fetchone()
            return bool(row and row[0] == holder)

        return await self._run(run)

    async def probe_write(self) -> None:
        """A real write, for /readyz: SELECT 1 passes on a full disk."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS health_probe (one INTEGER PRIMARY KEY, at TEXT)"
                )
                db.execute(
                    "INSERT OR REPLACE INTO health_probe VALUES (1, ?)",
                    (str(sqlite3.Binary(os.urandom(512)).hex()),),
                )

        await self._run(run)

    async def add_past_call(
        self,
        *,
        room: str,
        device: str,
        call_id: str,
        raised_ms: int,
        acknowledged_ms: int,
        arrived_ms: int,
        resolved_ms: int,
    ) -> bool:
        """A resolved call from the history generator; False if already there."""

        def run(db: sqlite3.Connection) -> bool:
            with db:
                if db.execute(
                    "SELECT 1 FROM alerts WHERE device=? AND call_id=?", (device, call_id)
                ).fetchone():
                    return False
                cur = db.execute(
                    "INSERT INTO alerts (kind, priority, room, device, call_id, status,"
                    " raised_at_ms, acknowledged_at_ms, acknowledged_by, arrived_at_ms,"
                    " resolved_at_ms, resolved_by, escalation_level) VALUES ('call', 'high', ?, ?,"
                    " ?, 'resolved', ?, ?, 'history', ?, ?, 'staff key', 1)",
                    (room, device, call_id, raised_ms, acknowledged_ms, arrived_ms, resolved_ms),
                )
                if cur.rowcount != 1:
                    return False
                steps = [
                    (raised_ms, "raised", device, "button"),
                    (acknowledged_ms, "acknowledged", "history", "console"),
                    (arrived_ms, "arrived", "staff key", "staff key"),
                    (resolved_ms, "resolved", "staff key", "staff key"),
                ]
                db.executemany(
                    "INSERT INTO alert_events (alert_id, at_ms, what, who, channel)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(cur.lastrowid, *step) for step in steps],
                )
                return True

        return await self._run(run)

    async def count_closed_before(self, before_ms: int) -> dict[str, int]:
        """Closed alerts that closed before `before_ms`, and their timelines'
        entries and joined presses: what `delete_closed_before` would delete."""
        row = await self._run(
            lambda db: db.execute(
                f"SELECT count(*), (SELECT count(*) FROM alert_events WHERE alert_id IN"
                f" (SELECT id FROM alerts WHERE {_CLOSED_BEFORE})), (SELECT count(*) FROM"
                f" joined_calls WHERE alert_id IN (SELECT id FROM alerts WHERE {_CLOSED_BEFORE}))"
                f" FROM alerts WHERE {_CLOSED_BEFORE}",
                (before_ms, before_ms, before_ms),
            ).fetchone()
        )
        return dict(zip(RETENTION_COUNTS, (int(n) for n in row), strict=True))

    async def delete_closed_before(self, before_ms: int, limit: int = 500) -> dict[str, int]:
        """One batch (at most `limit` alerts, one short transaction: the call
        path writes to this database too) of closed alerts that closed before
        `before_ms`, with their timelines and joined presses. Open alerts are
        never deleted, however old."""

        def run(db: sqlite3.Connection) -> dict[str, int]:
            with db:
                ids = [
                    r[0]
                    for r in db.execute(
                        f"SELECT id FROM alerts WHERE {_CLOSED_BEFORE} ORDER BY id LIMIT ?",
                        (before_ms, limit),
                    )
                ]
                if not ids:
                    return dict.fromkeys(RETENTION_COUNTS, 0)
                marks = ",".join("?" * len(ids))
                events = db.execute(
                    f"DELETE FROM alert_events WHERE alert_id IN ({marks})", ids
                ).rowcount
                joined = db.execute(
                    f"DELETE FROM joined_calls WHERE alert_id IN ({marks})", ids
                ).rowcount
                alerts = db.execute(f"DELETE FROM alerts WHERE id IN ({marks})", ids).rowcount
                return dict(zip(RETENTION_COUNTS, (alerts, events, joined), strict=True))

        return await self._run(run)

    async def set_test_mode(
        self, room: str, tester_pager: str | None, until_ms: int, who: str
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                if tester_pager is None:
                    db.execute("DELETE FROM test_mode WHERE room=?", (room,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO test_mode VALUES (?, ?, ?, ?)",
                        (room, tester_pager, until_ms, who),
                    )

        await self._run(run)

    async def test_mode(self, room: str, now_ms: int) -> str | None:
        """The tester's pager if the room is in test mode now, else None."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT tester_pager FROM test_mode WHERE room=? AND until_ms > ?", (room, now_ms)
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def set_escalation(
        self, alert_id: int, level: int, next_page_ms: int | None, at_ms: int, detail: str
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                old = db.execute(
                    "SELECT escalation_level FROM alerts WHERE id=?", (alert_id,)
                ).fetchone()
                db.execute(
                    "UPDATE alerts SET escalation_level=?, next_page_ms=? WHERE id=?",
                    (level, next_page_ms, alert_id),
                )
                if old and old[0] != level:
                    db.execute(
                        "INSERT INTO alert_events (alert_id, at_ms, what, channel, detail)"
                        " VALUES (?, ?, 'escalated', 'escalation', ?)",
                        (alert_id, at_ms, detail),
                    )

        await self._run(run)

    async def by_call(self, device: str, call_id: str) -> Alert | None:
        """The latest alert of this device's call (or of the call it joined)."""

        def run(db: sqlite3.Connection) -> Alert | None:
            cols = ", ".join(ALERT_COLUMNS)
            row = db.execute(
                f"SELECT {cols} FROM alerts WHERE device=? AND call_id=? ORDER BY id DESC LIMIT 1",
                (device, call_id),
            ).fetchone()
            if row is None:
                row = db.execute(
                    f"SELECT {cols} FROM alerts WHERE id=(SELECT alert_id FROM"
                    " joined_calls WHERE device=? AND call_id=?)",
                    (device, call_id),
                ).fetchone()
            return _alert(row) if row else None

        return await self._run(run)

    async def joined(self, alert_id: int) -> list[tuple[str, str]]:
        """(device, call_id) of the presses that joined this alert."""

        def run(db: sqlite3.Connection) -> list[tuple[str, str]]:
            return [
                (r[0], r[1])
                for r in db.execute(
                    "SELECT device, call_id FROM joined_calls WHERE alert_id=? ORDER BY at_ms",
                    (alert_id,),
                )
            ]

        return await self._run(run)

    async def get(self, alert_id: int) -> Alert | None:
        def run(db: sqlite3.Connection) -> Alert | None:
            row = db.execute(
                f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id=?", (alert_id,)
            ).fetchone()
            if row is None:
                return None
            alert = _alert(row)
            alert["timeline"] = [
                cast(
                    TimelineEntry,
                    dict(zip(("at_ms", "what", "who", "channel", "detail"), e, strict=True)),
                )
                for e in db.execute(
                    "SELECT at_ms, what, who, channel, detail FROM alert_events"
                    " WHERE alert_id=? ORDER BY at_ms, id",
                    (alert_id,),
                )
            ]
            return alert

        return await self._run(run)

    async def query(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        device: str | None = None,
        open_only: bool = False,
        limit: int = 500,
    ) -> list[Alert]:
        def run(db: sqlite3.Connection) -> list[Alert]:
            where, args = [], []
            if status:
                where.append("status=?")
                args.append(status)
            if kind:
                where.append("kind=?")
                args.append(kind)
            if device:
                where.append("device=?")
                args.append(device)
            if open_only:
                where.append("status NOT IN ('resolved', 'cancelled')")
            sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY raised_at_ms DESC LIMIT ?"
            return [_alert(r) for r in db.execute(sql, (*args, limit))]

        return await self._run(run)
