"""The server's own database: the room registry's source of truth.

Rooms are stored as their registry JSON, one row each, plus a version number
that grows on every edit so gateways can tell a new registry from a re-sent one.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from mamaroom.contract import Registry, RegistryRoom
from mamaroom.storage.sqlite_base import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registry_meta (
    one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL, updated_at TEXT NOT NULL
);
"""


class ServerDb(SqliteDatabase):
    component = "registry"
    schema = SCHEMA

    async def registry(self) -> Registry | None:
        """The registry, or None before the first seeding."""

        def run(db: sqlite3.Connection) -> Registry | None:
            meta = db.execute("SELECT version, updated_at FROM registry_meta").fetchone()
            if meta is None:
                return None
            rows = db.execute("SELECT body FROM rooms ORDER BY id").fetchall()
            return Registry(
                version=meta[0],
                updated_at=datetime.fromisoformat(meta[1]),
                rooms=[RegistryRoom.model_validate_json(r[0]) for r in rows],
            )

        return await self._run(run)

    async def replace_rooms(self, rooms: list[RegistryRoom]) -> Registry:
        """Write the whole room list as the next registry version, atomically."""

        def run(db: sqlite3.Connection) -> Registry:
            now = datetime.now(UTC)
            with db:
                meta = db.execute("SELECT version FROM registry_meta").fetchone()
                version = (meta[0] if meta else 0) + 1
                db.execute("DELETE FROM rooms")
                db.executemany(
                    "INSERT INTO rooms VALUES (?, ?)", [(r.id, r.model_dump_json()) for r in rooms]
                )
                db.execute(
                    "INSERT OR REPLACE INTO registry_meta VALUES (1, ?, ?)",
                    (version, now.isoformat()),
                )
            return Registry(
                version=version, updated_at=now, rooms=sorted(rooms, key=lambda r: r.id)
            )

        return await self._run(run)
