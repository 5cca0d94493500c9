"""Device state: the last thing known of each node, kept in the embedded
file (`store.sqlite`) whatever the time-series backend.

- `devices`: each registered node's health record (last seen, boot and seq,
  the latest telemetry) and the input of room-state derivation, restored
  when the gateway restarts;
- `room_states`: the room states the gateway last published;
- `unknown_devices`: nodes that published but are not in the registry,
  candidates to adopt.

Device health follows every new message. On the embedded backend the time
series (sqlite.py) call `note_messages` inside their own write transaction,
so a stored message and the health it implies are committed together; with
InfluxDB the gateway calls `DeviceStateStore.note_messages` after the write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mamaroom.contract import Occupancy, Telemetry
from mamaroom.storage import Record
from mamaroom.storage.sqlite_base import SqliteDatabase

SCHEMA = """
-- The last thing known of each device: its health record and the input of
-- room-state derivation, restored when the gateway restarts.
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, room TEXT,
    last_seen_ms INTEGER, status TEXT, status_ms INTEGER,
    boot INTEGER, seq INTEGER, boots INTEGER NOT NULL DEFAULT 0,
    occupied INTEGER, occupied_ms INTEGER,
    uptime_s INTEGER, rssi INTEGER, heap_free INTEGER, fw TEXT, reset_reason TEXT
);
-- Devices that published but are not in the registry: candidates to adopt.
CREATE TABLE IF NOT EXISTS unknown_devices (
    device TEXT PRIMARY KEY, first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
    messages INTEGER NOT NULL, last_topic TEXT
);
CREATE TABLE IF NOT EXISTS room_states (
    room TEXT PRIMARY KEY, state TEXT NOT NULL, since_ms INTEGER, device TEXT, reason TEXT
);
"""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: str
    room: str | None
    last_seen_ms: int | None
    status: str | None
    status_ms: int | None
    boot: int | None
    seq: int | None
    boots: int
    occupied: bool | None
    occupied_ms: int | None
    uptime_s: int | None
    rssi: int | None
    heap_free: int | None
    fw: str | None
    reset_reason: str | None


@dataclass(frozen=True, slots=True)
class RoomStateRow:
    room: str
    state: str
    since_ms: int | None
    device: str | None
    reason: str | None


class DeviceStateStore(SqliteDatabase):
    """The device-state tables of `store.sqlite`."""

    # Its tables were part of the "store" component until the split; a file
    # from then is version 1 of this one (migrations.py).
    component = "devices"
    schema = SCHEMA

    # --- writes (gateway) -------------------------------------------------

    async def note_messages(self, records: list[Record]) -> None:
        """Update the device-health records from new messages stored elsewhere
        (InfluxDB); the embedded time series do this in their own write."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                note_messages(db, records)

        await self._run(run)

    async def note_status(
        self, device: str, room: str | None, status: str, at_ms: int, *, live: bool
    ) -> None:
        """A device's status (birth or last will); a live one is also a sign of life."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                note_known(db, [(device, room)])
                db.execute(
                    "UPDATE devices SET status=?, status_ms=?, room=?,"
                    " last_seen_ms=CASE WHEN ? THEN MAX(COALESCE(last_seen_ms,0), ?)"
                    " ELSE last_seen_ms END WHERE device=?",
                    (status, at_ms, room, live, at_ms, device),
                )

        await self._run(run)

    async def note_unknown_device(self, device: str, topic: str, at_ms: int) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO unknown_devices VALUES (?, ?, ?, 1, ?)"
                    " ON CONFLICT(device) DO UPDATE SET last_seen_ms=excluded.last_seen_ms,"
                    " messages=messages+1, last_topic=excluded.last_topic",
                    (device, at_ms, at_ms, topic),
                )

        await self._run(run)

    async def forget_unknown_device(self, device: str) -> None:
        """The device was adopted into the registry."""

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM unknown_devices WHERE device=?", (device,))

        await self._run(run)

    async def save_room_states(self, rows: list[RoomStateRow]) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO room_states VALUES (?, ?, ?, ?, ?)",
                    [(r.room, r.state, r.since_ms, r.device, r.reason) for r in rows],
                )

        await self._run(run)

    async def forget_room_states(self, rooms: list[str]) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("DELETE FROM room_states WHERE room=?", [(r,) for r in rooms])

        await self._run(run)

    # --- reads ---------------------------------------------------------------

    async def devices(self) -> list[DeviceRow]:
        def run(db: sqlite3.Connection) -> list[DeviceRow]:
            rows = db.execute(
                "SELECT device, room, last_seen_ms, status, status_ms, boot, seq, boots,"
                " occupied, occupied_ms, uptime_s, rssi, heap_free, fw, reset_reason"
                " FROM devices ORDER BY device"
            ).fetchall()
            return [
                DeviceRow(
                    *r[:8],
                    None if r[8] is None else bool(r[8]),  # type: ignore[call-arg]
                    *r[9:],
                )
                for r in rows
            ]

        return await self._run(run)

    async def room_states(self) -> list[RoomStateRow]:
        def run(db: sqlite3.Connection) -> list[RoomStateRow]:
            rows = db.execute("SELECT room, state, since_ms, device, reason FROM room_states")
            return [RoomStateRow(*r) for r in rows.fetchall()]

        return await self._run(run)

    async def unknown_devices(self) -> list[dict[str, Any]]:
        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = db.execute(
                "SELECT device, first_seen_ms, last_seen_ms, messages, last_topic"
                " FROM unknown_devices ORDER BY device"
            )
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

        return await self._run(run)


# --- in a caller's transaction (sqlite.py's write) ---------------------------


def note_known(db: sqlite3.Connection, devices: Iterable[tuple[str, str | None]]) -> None:
    """(device, room) pairs: a row for each device not yet known, health unknown."""
    db.executemany(
        "INSERT INTO devices (device, room) VALUES (?, ?) ON CONFLICT(device) DO NOTHING",
        list(devices),
    )


_DEVICE_UPSERT = """
INSERT INTO devices (device, room, last_seen_ms, boot, seq, boots, occupied, occupied_ms,
                     uptime_s, rssi, heap_free, fw, reset_reason)
VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device) DO UPDATE SET
    room = excluded.room,
    last_seen_ms = MAX(COALESCE(last_seen_ms, 0), excluded.last_seen_ms),
    boots = boots + (boot IS NOT excluded.boot),
    seq = CASE WHEN boot IS excluded.boot THEN MAX(COALESCE(seq, 0), excluded.seq)
               ELSE excluded.seq END,
    boot = excluded.boot,
    occupied = COALESCE(excluded.occupied, occupied),
    occupied_ms = COALESCE(excluded.occupied_ms, occupied_ms),
    uptime_s = COALESCE(excluded.uptime_s, uptime_s),
    rssi = COALESCE(excluded.rssi, rssi),
    heap_free = COALESCE(excluded.heap_free, heap_free),
    fw = COALESCE(excluded.fw, fw),
    reset_reason = COALESCE(excluded.reset_reason, reset_reason)
"""


def note_messages(db: sqlite3.Connection, records: list[Record]) -> None:
    """Device health from a batch of new messages: one upsert per device with
    its latest values (every expression in the UPDATE sees the row as it was)."""
    latest: dict[str, list[Any]] = {}
    for rec in records:
        msg = rec.message
        row = latest.get(rec.device)
        if row is None:
            row = latest[rec.device] = [
                rec.device,
                rec.room,
                0,
                msg.boot,
                msg.seq,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            ]
        row[1] = rec.room
        row[2] = max(row[2], rec.received_ms)
        if msg.boot != row[3] or msg.seq > row[4]:
            row[3], row[4] = msg.boot, msg.seq
        if isinstance(msg, Occupancy):
            row[5], row[6] = msg.occupied, rec.time_ms
        elif isinstance(msg, Telemetry):
            row[7:12] = [msg.uptime_s, msg.rssi, msg.heap_free, msg.fw, msg.reset_reason]
    db.executemany(_DEVICE_UPSERT, list(latest.values()))
