"""The call journal on its own: allocated in full up front (so a full disk
cannot stop a write later), slots written, rewritten, cleared, and read back
after a restart; and an entry read back by the alert service."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from server.alerts_db import AlertsDb
from server.services.alert_model import Alert, AlertKind, AlertStatus, Priority
from server.services.alerts import AlertService
from server.services.call_journal import SLOT_SIZE, CallJournal, JournalFull


def test_slots_survive_a_reopen_and_the_file_is_allocated(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    journal = CallJournal(path, slots=8)
    assert journal.open() == []
    st = os.stat(path)
    assert st.st_size == 8 * SLOT_SIZE and st.st_blocks * 512 >= st.st_size  # not sparse
    a = journal.write({"call_id": "a", "status": "open"})
    b = journal.write({"call_id": "b", "status": "open"})
    journal.write({"call_id": "a", "status": "acknowledged"}, a)  # rewritten in place
    journal.clear(b)
    journal.close()
    again = CallJournal(path, slots=8)
    [entry] = again.open()
    assert (entry.slot, entry.body) == (a, {"call_id": "a", "status": "acknowledged"})
    assert again.used == 1
    again.close()


def test_a_full_journal_says_so(tmp_path: Path) -> None:
    journal = CallJournal(tmp_path / "journal.bin", slots=2)
    journal.open()
    journal.write({"n": 1})
    journal.write({"n": 2})
    with pytest.raises(JournalFull):
        journal.write({"n": 3})
    with pytest.raises(ValueError):
        journal.write({"big": "x" * SLOT_SIZE}, 0)
    journal.close()


def test_a_journalled_call_with_unknown_values_is_kept_as_an_open_call(tmp_path: Path) -> None:
    """A journal entry whose kind, priority or status this release does not
    know (edited by hand, or left by a newer release) neither stops the
    server's start nor is dropped: it is an open call, paged."""
    journal = CallJournal(tmp_path / "journal.bin", slots=4)
    assert journal.open() == []
    journal.write(
        {
            "kind": "urgent_call",
            "priority": "critical",
            "room": "B-0101",
            "device": "node-1",
            "call_id": "c-1",
            "status": "escalated",
            "raised_at_ms": 1_700_000_000_000,
            "acknowledged_at_ms": None,
            "acknowledged_by": None,
            "arrived_at_ms": None,
            "resolved_at_ms": None,
            "resolved_by": None,
            "escalation_level": 0,
            "next_page_ms": None,
            "test": False,
            "subject": None,
            "paging": {},
            "nobody": False,
            "provisional": True,
            "timeline": [],
        }
    )
    journal.close()

    async def load() -> tuple[list[Alert], list[Alert]]:
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        alerts = AlertService(db, journal=CallJournal(tmp_path / "journal.bin", slots=4))
        try:
            await alerts.load()
            return await alerts.calls_to_page(), await db.query(open_only=True)
        finally:
            await db.close()

    paged, stored = asyncio.run(load())
    # Loaded as an open call, then committed to the database as one.
    assert [(c["kind"], c["priority"], c["status"], c["room"], c["call_id"]) for c in paged] == [
        (AlertKind.CALL, Priority.HIGH, AlertStatus.OPEN, "B-0101", "c-1")
    ]
    assert [(a["kind"], a["call_id"]) for a in stored] == [("call", "c-1")]
