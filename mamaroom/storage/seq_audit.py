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

An impossible gap is a reset, not a loss: a jump of more than MAX_SEQ_GAP
within one boot (a node's `seq` of 0 then 2**63-1 once claimed 9.2e18 lost
messages) starts the boot's range afresh from the new seq. What the range
had lost until then is kept (`lost_before`), and the jump is counted in
`resets`.
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
    lost_before INTEGER NOT NULL DEFAULT 0, resets INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, boot)
) WITHOUT ROWID;
"""

#: More messages than a node can send between two that arrive: at one message
#: a second, 11 days of nothing but lost messages. Beyond it, a reset.
MAX_SEQ_GAP = 1_000_000

# Every expression of an UPDATE sees the row as it was.
_JUMP = (
    f"(excluded.first_seq - last_seq > {MAX_SEQ_GAP}"
    f" OR first_seq - excluded.last_seq > {MAX_SEQ_GAP})"
)
_UPSERT = f"""
INSERT INTO seq_audit (device, boot, first_seq, last_seq, stored, updated_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (device, boot) DO UPDATE SET
    lost_before = lost_before + CASE WHEN {_JUMP}
        THEN MAX(last_seq - first_seq + 1 - stored, 0) ELSE 0 END,
    resets = resets + {_JUMP},
    first_seq = CASE WHEN {_JUMP} THEN excluded.first_seq
                     ELSE MIN(first_seq, excluded.first_seq) END,
    last_seq = CASE WHEN {_JUMP} THEN excluded.last_seq
                    ELSE MAX(last_seq, excluded.last_seq) END,
    stored = CASE WHEN {_JUMP} THEN excluded.stored ELSE stored + excluded.stored END,
    updated_ms = excluded.updated_ms
"""


def migrate_audit(db: sqlite3.Connection) -> None:
    """Add the reset columns to an audit table made before them."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(seq_audit)")}
    if not columns:
        return  # no audit table yet: the schema makes it whole
    for column in ("lost_before", "resets"):
        if column not in columns:
            db.execute(f"ALTER TABLE seq_audit ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")


@dataclass(frozen=True, slots=True)
class SeqGap:
    """One boot of one device: its stored seq range and what is missing in it."""

    device: str
    boot: int
    first_seq: int
    last_seq: int
    stored: int
    updated_ms: int
    #: Lost before the last reset (an impossible jump of seq), and how many resets.
    lost_before: int = 0
    resets: int = 0

    @property
    def lost(self) -> int:
        return int(max(self.last_seq - self.first_seq + 1 - self.stored, 0) + self.lost_before)


def note_seqs(db: sqlite3.Connection, keys: Iterable[tuple[str, int, int]], now_ms: int) -> None:
    """Count newly stored messages `(device, boot, seq)`; call inside the
    transaction that stores them, with only the new (not duplicate) ones."""
    seqs: dict[tuple[str, int], list[int]] = {}
    for device, boot, seq in keys:
        found = seqs.get((device, boot))
        if found is None:
            seqs[(device, boot)] = [seq]
        else:
            found.append(seq)
    rows = []
    for (device, boot), values in seqs.items():
        values.sort()
        # Contiguous runs, cut at impossible jumps; applied in order, each
        # jump resets the range (the UPSERT's _JUMP).
        lo = prev = values[0]
        n = 0
        for seq in values:
            if seq - prev > MAX_SEQ_GAP:
                rows.append((device, boot, lo, prev, n, now_ms))
                lo, n = seq, 0
            prev = seq
            n += 1
        rows.append((device, boot, lo, prev, n, now_ms))
    db.executemany(_UPSERT, rows)


def read_gaps(db: sqlite3.Connection) -> list[SeqGap]:
    columns = "device, boot, first_seq, last_seq, stored, updated_ms"
    try:
        rows = db.execute(
            f"SELECT {columns}, lost_before, resets FROM seq_audit ORDER BY device, boot"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # nothing stored yet by a gateway with the audit
        if "no such column" not in str(exc):
            raise
        # A store written by a gateway from before resets were counted.
        rows = db.execute(f"SELECT {columns} FROM seq_audit ORDER BY device, boot").fetchall()
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
