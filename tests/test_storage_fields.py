"""The stores' field lists against the contract's payload models: every field
a device payload has is a column in SQLite and a field in InfluxDB, in the
model's order, holding the model's value; or it is named as left out."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mamaroom.contract import (
    PAYLOAD_MODELS,
    Call,
    CallStatus,
    Envelope,
    Kind,
    Occupancy,
    Telemetry,
    payload_fields,
)
from mamaroom.storage import NOT_STORED, Record, stored_fields
from mamaroom.storage.device_state import DeviceRow
from mamaroom.storage.embedded import EmbeddedStore
from mamaroom.storage.line_protocol import MEASUREMENTS, to_line
from mamaroom.storage.sqlite import _INSERTS

T0 = 1_732_400_000_000
#: A message of each kind with every field set (none left at its default).
FULL: dict[Kind, Envelope] = {
    Kind.OCCUPANCY: Occupancy(
        v=1, boot=7, seq=1, ts=T0, occupied=True, source="radar", radar="still", still_s=310
    ),
    Kind.TELEMETRY: Telemetry(
        v=1,
        boot=7,
        seq=2,
        ts=T0,
        uptime_s=3600,
        rssi=-61,
        heap_free=81234,
        fw="1.0.0",
        reset_reason="power_on",
    ),
    Kind.CALL: Call(
        v=1,
        boot=7,
        seq=3,
        ts=T0,
        action="shown",
        call_id="b3f1-7-43",
        status=CallStatus.RECEIVED,
        test=True,
    ),
}
TABLES = {Kind.OCCUPANCY: "occupancy", Kind.TELEMETRY: "telemetry", Kind.CALL: "calls"}
#: The envelope as SQLite keeps it, before the payload's own columns.
SQLITE_ENVELOPE = ["device", "boot", "seq", "room", "time_ms", "device_ts_ms", "received_ms"]
#: SQLite's exceptions, as docs/storage.md states them: raw telemetry keeps the
#: device's extra fields as JSON (`extra`), and `reset_reason` only in the
#: `devices` table (the latest of each device), not in every raw row.
SQLITE_TELEMETRY_ONLY_IN_DEVICES = ("reset_reason",)


def test_every_payload_model_has_a_table_and_a_measurement() -> None:
    models = set(PAYLOAD_MODELS.values())
    assert set(MEASUREMENTS) == models and set(_INSERTS) == models
    assert set(FULL) == set(PAYLOAD_MODELS)
    for kind, msg in FULL.items():
        assert type(msg) is PAYLOAD_MODELS[kind]
        unset = [n for n in payload_fields(type(msg)) if n not in msg.model_fields_set]
        assert not unset, f"the {kind} example leaves {unset} at their defaults"


def test_only_the_call_test_marker_is_left_out() -> None:
    assert NOT_STORED == {Call: frozenset({"test"})}
    for model in PAYLOAD_MODELS.values():
        assert NOT_STORED.get(model, frozenset()) <= set(payload_fields(model))


def _sqlite(tmp_path: Path) -> sqlite3.Connection:
    async def write() -> None:
        store = EmbeddedStore(tmp_path / "store.sqlite")
        await store.open()
        try:
            assert await store.series.write(
                [Record("dev-a", "SP1-0101", kind, msg, T0 + 5) for kind, msg in FULL.items()]
            ) == [True] * len(FULL)
        finally:
            await store.close()

    asyncio.run(write())
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.row_factory = sqlite3.Row
    return db


@pytest.mark.parametrize("kind", list(TABLES))
def test_sqlite_columns_are_the_model_fields(tmp_path: Path, kind: Kind) -> None:
    db = _sqlite(tmp_path)
    msg = FULL[kind]
    table = TABLES[kind]
    columns = [r["name"] for r in db.execute(f"PRAGMA table_info({table})")]
    fields = list(stored_fields(type(msg)))
    if kind is Kind.TELEMETRY:
        fields = [f for f in fields if f not in SQLITE_TELEMETRY_ONLY_IN_DEVICES] + ["extra"]
    assert columns == SQLITE_ENVELOPE + fields
    [row] = db.execute(f"SELECT * FROM {table}").fetchall()
    for name in stored_fields(type(msg)):
        if name in columns:  # the value in its own column, not shifted to another
            assert row[name] == getattr(msg, name), name


def test_the_devices_table_keeps_every_telemetry_field(tmp_path: Path) -> None:
    db = _sqlite(tmp_path)
    [row] = db.execute("SELECT * FROM devices").fetchall()
    tel = FULL[Kind.TELEMETRY]
    assert (
        set(stored_fields(Telemetry))
        <= set(row.keys())
        <= {f.name for f in DeviceRow.__dataclass_fields__.values()}
    )
    for name in stored_fields(Telemetry):
        assert row[name] == getattr(tel, name), name
    assert row["occupied"] == 1  # and the latest occupancy


@pytest.mark.parametrize("kind", list(TABLES))
def test_influxdb_fields_are_the_model_fields(kind: Kind) -> None:
    msg = FULL[kind]
    line = to_line(Record("dev-a", "SP1-0101", kind, msg, T0 + 5))
    head, body, _time = line.split(" ")
    assert head.split(",")[0] == MEASUREMENTS[type(msg)]
    fields: dict[str, Any] = dict(f.split("=", 1) for f in body.split(","))
    envelope = ["boot", "seq", "received_ms", "device_clock"]
    assert list(fields) == envelope + list(stored_fields(type(msg)))
    for name in stored_fields(type(msg)):
        value = getattr(msg, name)
        expected = (
            f'"{value}"'
            if isinstance(value, str)
            else str(value).lower()
            if isinstance(value, bool)
            else f"{value}i"
        )
        assert fields[name] == expected, name
