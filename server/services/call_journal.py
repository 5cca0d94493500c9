"""The call journal: where a call goes when the database cannot take it.

A full or failing data disk must not stop an emergency call (issue: a 100 %
full filesystem gave 0 alerts, 0 pages and 0 `received`). The journal is a
small file of fixed-size slots, written out in full (real blocks, not a
sparse file) when the server starts, so later writes only overwrite blocks
the file already owns and need no free space. A call that the database
refused is written to a slot and fsync'd; only then is the node told
`received` (the contract: `received` means durably stored). Once the
database takes writes again, each journalled call is committed exactly once
and its slot is cleared.

Slot layout: one status byte (0 free, 1 used), a 2-byte big-endian length,
then that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mamaroom.logs import get_logger

log = get_logger(__name__)

SLOT_SIZE = 4096
#: 256 calls journalled at once: far more than a site raises while its disk is full.
SLOTS = 256
_HEADER = 3


class JournalFull(Exception):
    """Every slot holds a call not yet committed."""


@dataclass
class JournalEntry:
    slot: int
    body: dict[str, Any]


class CallJournal:
    """Pre-allocated, fixed-size; every method does blocking file I/O (small,
    bounded), called from the alert service's own worker thread."""

    def __init__(self, path: Path, *, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        self._fd: int | None = None
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def open(self) -> list[JournalEntry]:
        """Open (allocating the file on first use); the calls still waiting to be committed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.slots * SLOT_SIZE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size < size:
            # Written, not truncated: a sparse file would need blocks later,
            # exactly when the disk is full.
            os.lseek(fd, 0, os.SEEK_END)
            missing = size - os.fstat(fd).st_size
            os.write(fd, b"\0" * missing)
            os.fsync(fd)
        self._fd = fd
        pending = []
        for slot in range(self.slots):
            raw = os.pread(fd, SLOT_SIZE, slot * SLOT_SIZE)
            if raw[:1] != b"\x01":
                continue
            length = int.from_bytes(raw[1:3], "big")
            try:
                body = json.loads(raw[_HEADER : _HEADER + length])
            except ValueError:
                log.error("call journal: unreadable slot skipped", slot=slot)
                continue
            self._used.add(slot)
            pending.append(JournalEntry(slot, body))
        return pending

    def write(self, body: dict[str, Any], slot: int | None = None) -> int:
        """Store (or rewrite) one call durably; its slot."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) > SLOT_SIZE - _HEADER:
            raise ValueError(f"journal entry of {len(data)} bytes is too large")
        with self._lock:
            if slot is None:
                free = next((i for i in range(self.slots) if i not in self._used), None)
                if free is None:
                    raise JournalFull(f"all {self.slots} journal slots hold calls")
                slot = free
            record = b"\x01" + len(data).to_bytes(2, "big") + data
            os.pwrite(self._require_fd(), record.ljust(SLOT_SIZE, b"\0"), slot * SLOT_SIZE)
            os.fdatasync(self._require_fd())
            self._used.add(slot)
        return slot

    def clear(self, slot: int) -> None:
        with self._lock:
            os.pwrite(self._require_fd(), b"\0" * SLOT_SIZE, slot * SLOT_SIZE)
            os.fdatasync(self._require_fd())
            self._used.discard(slot)

    @property
    def used(self) -> int:
        return len(self._used)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise OSError("call journal is not open")
        return self._fd
