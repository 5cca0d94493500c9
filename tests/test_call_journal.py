"""The call journal on its own: allocated in full up front (so a full disk
cannot stop a write later), slots written, rewritten, cleared, and read back
after a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
