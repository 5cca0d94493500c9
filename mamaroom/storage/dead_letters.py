"""Dead letters: records a backend refused, set aside for an operator.

A message that is valid by the contract can still be refused by a store (an
integer too large for it, a point InfluxDB rejects) or break something on its
way (a bug). Such a record must never stop its batch, crash the gateway or
wedge the commit stage, and must not be silently dropped either: it is kept
here with why, counted (`mamaroom_gateway_dead_letters`), and listed and
acknowledged with `mamaroom dead-letters`.

The table lives in the gateway's own SQLite files: `store.sqlite` (the
gateway's refusals, any backend) and `influx-spool.sqlite` (points InfluxDB
refused while draining the spool).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mamaroom.storage.sqlite_base import SqliteDatabase

SCHEMA = """
-- Records a backend refused (mamaroom/storage/dead_letters.py).
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, source TEXT NOT NULL,
    reason TEXT NOT NULL, device TEXT, topic TEXT, payload TEXT NOT NULL, acked_ms INTEGER
);
"""
#: A reason is an exception's text; its first part says enough.
REASON_MAX = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    at_ms: int
    #: Who refused it: `gateway` (storing) or `influxdb` (draining the spool).
    source: str
    reason: str
    device: str | None
    topic: str | None
    #: The record as it was to be stored (JSON, or an InfluxDB line).
    payload: str
    acked_ms: int | None


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    source: str
    reason: str
    device: str | None
    topic: str | None
    payload: str


def add(db: sqlite3.Connection, letters: Iterable[NewDeadLetter], now_ms: int) -> None:
    db.executemany(
        "INSERT INTO dead_letters (at_ms, source, reason, device, topic, payload)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(now_ms, d.source, d.reason[:REASON_MAX], d.device, d.topic, d.payload) for d in letters],
    )


def read(db: sqlite3.Connection, *, include_acked: bool = False) -> list[DeadLetter]:
    try:
        rows = db.execute(
            "SELECT id, at_ms, source, reason, device, topic, payload, acked_ms"
            " FROM dead_letters"
            + ("" if include_acked else " WHERE acked_ms IS NULL")
            + " ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # written by a gateway older than the table
        raise
    return [DeadLetter(*r) for r in rows]


def count_open(db: sqlite3.Connection) -> int:
    try:
        return int(
            db.execute("SELECT COUNT(*) FROM dead_letters WHERE acked_ms IS NULL").fetchone()[0]
        )
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise


def ack(db: sqlite3.Connection, ids: Sequence[int] | None, now_ms: int) -> int:
    """Acknowledge these (None: all open ones); how many were newly acknowledged."""
    with db:
        if ids is None:
            return db.execute(
                "UPDATE dead_letters SET acked_ms=? WHERE acked_ms IS NULL", (now_ms,)
            ).rowcount
        return sum(
            db.execute(
                "UPDATE dead_letters SET acked_ms=? WHERE id=? AND acked_ms IS NULL", (now_ms, i)
            ).rowcount
            for i in ids
        )


def open_file(path: Path) -> sqlite3.Connection | None:
    """A connection to a gateway database for the CLI, or None if it is not there."""
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=10)
    db.executescript(SCHEMA)  # a spool or store from before dead letters
    return db


class DeadLetterStore(SqliteDatabase):
    """The gateway's dead letters in `store.sqlite` (any backend; the spool
    keeps its own, influx.py)."""

    # The table was part of the "store" component until the storage split; a
    # file from then is version 1 of this one (migrations.py).
    component = "dead_letters"
    schema = SCHEMA

    async def add(self, letters: list[NewDeadLetter], now_ms: int) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                add(db, letters, now_ms)

        await self._run(run)

    async def count_open(self) -> int:
        """Dead letters not yet acknowledged."""
        return await self._run(count_open)
