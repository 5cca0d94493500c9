"""The duty roster edited from the admin page.

The roster starts as `escalation.roster` from the configuration. Once an
admin saves one from the admin page it is kept in the server's database and
wins over the file from then on (also after a restart). The escalator reads
the same settings object, so a saved roster takes effect at the next page.
"""

from __future__ import annotations

import json
import sqlite3
import time

from pydantic import TypeAdapter

from mamaroom.config import DutyShift, EscalationSettings
from mamaroom.logs import get_logger
from mamaroom.storage.sqlite_base import SqliteDatabase

log = get_logger(__name__)
SHIFTS = TypeAdapter(list[DutyShift])

SCHEMA = """
CREATE TABLE IF NOT EXISTS duty_roster (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    body TEXT NOT NULL, updated_ms INTEGER NOT NULL, updated_by TEXT
);
"""


class RosterDb(SqliteDatabase):
    component = "roster"
    schema = SCHEMA

    async def saved(self) -> tuple[list[DutyShift], int, str | None] | None:
        def run(db: sqlite3.Connection) -> tuple[str, int, str | None] | None:
            row = db.execute("SELECT body, updated_ms, updated_by FROM duty_roster").fetchone()
            return None if row is None else (row[0], row[1], row[2])

        row = await self._run(run)
        return None if row is None else (SHIFTS.validate_json(row[0]), row[1], row[2])

    async def save(self, shifts: list[DutyShift], who: str) -> None:
        body = json.dumps([s.model_dump() for s in shifts], ensure_ascii=False)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO duty_roster VALUES (1, ?, ?, ?)",
                    (body, int(time.time() * 1000), who),
                )

        await self._run(run)


class Roster:
    def __init__(self, db: RosterDb, escalation: EscalationSettings) -> None:
        self.db = db
        self._escalation = escalation
        self.source = "config"

    async def load(self) -> None:
        saved = await self.db.saved()
        if saved is not None:
            self._escalation.roster = saved[0]
            self.source = "admin"
            log.info("duty roster from the admin page", shifts=len(saved[0]), by=saved[2])

    @property
    def shifts(self) -> list[DutyShift]:
        return self._escalation.roster

    async def replace(self, shifts: list[DutyShift], who: str) -> None:
        await self.db.save(shifts, who)
        self._escalation.roster = shifts
        self.source = "admin"
        log.info("duty roster changed", shifts=len(shifts), by=who)
