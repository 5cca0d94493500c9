"""The loss audit: messages missing from storage, counted from `seq` gaps.

Every node numbers its messages of one boot with a `seq` that goes up by one
per message (occupancy, call and telemetry share the counter). Storage is the
one place where every message of a device meets (with shared subscriptions a
gateway sees only its share), so the audit lives there: one row per
`(device, boot)` with the lowest and highest `seq` stored and how many
distinct messages were stored. `last - first + 1 - stored` is how many
messages of that boot never arrived.

The row is updated in the same transaction that stores (or spools) the new
messages, so a crash never counts a message it did not keep, and a
redelivered duplicate is never counted twice. It is a handful of rows per
device, so reading it costs nothing, and it is not thinned by telemetry
retention or the dedupe window.

What it cannot see: messages lost at the very start of a boot (before the
first one stored) or at its very end (no later `seq` yet; the next telemetry,
within 60 s, closes such a gap). It assumes the node counts `seq` up by one,
as mamaroom's firmware and simulator do; a node that skips numbers shows as
losing them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mamaroom.storage import StorageError

SCHEMA = """
-- Loss audit (mamaroom/storage/seq_audit.py): per device and boot, the seq
-- range stored and how many distinct messages; the difference is lost.
CREATE TABLE IF NOT EXISTS seq_audit (
    device TEXT NOT NULL, boot INTEGER NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, stored INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (device, boot)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO seq_audit VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (device, boot) DO UPDATE SET
    first_seq = MIN(first_seq, excluded.first_seq),
    last_seq = MAX(last_seq, excluded.last_seq),
    stored = stored + excluded.stored,
    updated_ms = excluded.updated_ms
"""


@dataclass(frozen=True, slots=True)
class SeqGap:
    """One boot of one device: its stored seq range and what is missing in it."""

    device: str
    boot: int
    first_seq: int
    last_seq: int
    stored: int
    updated_ms: int

    @property
    def lost(self) -> int:
        return max(self.last_seq - self.first_seq + 1 - self.stored, 0)


def note_seqs(db: sqlite3.Connection, keys: Iterable[tuple[str, int, int]],
              now_ms: int) -> None:
    """Count newly stored messages `(device, boot, seq)`; call inside the
    transaction that stores them, with only the new (not duplicate) ones."""
    rows: dict[tuple[str, int], list[int]] = {}
    for device, boot, seq in keys:
        row = rows.get((device, boot))
        if row is None:
            rows[(device, boot)] = [seq, seq, 1]
        else:
            row[0] = min(row[0], seq)
            row[1] = max(row[1], seq)
            row[2] += 1
    db.executemany(_UPSERT, [(device, boot, lo, hi, n, now_ms)
                             for (device, boot), (lo, hi, n) in rows.items()])


def read_gaps(db: sqlite3.Connection) -> list[SeqGap]:
    try:
        rows = db.execute("SELECT device, boot, first_seq, last_seq, stored, updated_ms"
                          " FROM seq_audit ORDER BY device, boot").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # nothing stored yet by a gateway with the audit
        raise
    return [SeqGap(*r) for r in rows]


def lost_by_device(gaps: Iterable[SeqGap]) -> dict[str, int]:
    out: dict[str, int] = {}
    for gap in gaps:
        out[gap.device] = out.get(gap.device, 0) + gap.lost
    return out


async def read_gaps_file(path: Path) -> list[SeqGap]:
    """The audit from a database file another process writes (the server reads
    the gateway's store or spool); empty if the file is not there yet.
    Raises StorageError when it cannot be read."""

    def run() -> list[SeqGap]:
        if not path.exists():
            return []
        try:
            # Not `mode=ro`: a read-only connection cannot always open a WAL
            # database; query_only keeps this one from ever writing.
            db = sqlite3.connect(path, timeout=5)
            try:
                db.execute("PRAGMA query_only=1")
                return read_gaps(db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: loss audit unreadable: {exc}") from exc

    return await asyncio.to_thread(run)
