"""Records as InfluxDB line protocol: the schema of docs/storage.md.

Timestamps are nanoseconds: the message's time in ms (device time, or the
first arrival when the device has no clock) with (boot, seq) in the
sub-millisecond digits (point_time_ns). A redelivered message therefore
becomes the very same point (InfluxDB overwrites it instead of adding one),
and two messages of one device in the same millisecond stay apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mamaroom.contract import Call, Envelope, Occupancy, Telemetry
from mamaroom.storage import Record, StorageError, stored_fields

MEASUREMENTS: dict[type[Envelope], str] = {
    Occupancy: "occupancy",
    Telemetry: "telemetry",
    Call: "call",
}


#: Spreads boots over the sub-millisecond digits (odd and not a divisor of
#: 10^6, so consecutive boots land far apart).
BOOT_SPREAD = 919_113


def point_time_ns(rec: Record) -> int:
    """The message's time in ms, with (boot, seq) in the sub-millisecond
    digits: a redelivery is the same point; two messages of one device in
    one millisecond are apart, even from different boots (a backlog drained
    after a reboot, dated by arrival: measured losing points when only seq
    was used)."""
    msg = rec.message
    return rec.time_ms * 1_000_000 + (msg.seq + msg.boot * BOOT_SPREAD) % 1_000_000


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # A device extra beyond InfluxDB's 64-bit integers would make it refuse
        # the whole point; the extra alone is left out (SQLite keeps it, as JSON).
        return f"{value}i" if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return _field_str(value)
    return None  # lists, objects: not representable as a field


#: "measurement,tags" per (message type, device, room, building, floor): the
#: same few hundred keys recur in every batch, and building them was the
#: largest single cost of a message on the InfluxDB path (bench/ingest.py).
_heads: dict[tuple[type, str, str | None, str | None, int | None], str] = {}
_HEADS_MAX = 100_000


def _head(measurement: str, rec: Record) -> str:
    tags = [("device", rec.device)]
    if rec.room:
        tags.append(("room", rec.room))
    if rec.building:
        tags.append(("building", rec.building))
    if rec.floor is not None:
        tags.append(("floor", str(rec.floor)))
    tags.sort()  # InfluxDB's preferred order: sorted by key
    return measurement + "".join(f",{k}={_tag(v)}" for k, v in tags if v)


def _int(value: int) -> str:
    return f"{value}i"


def _bool(value: bool) -> str:  # noqa: FBT001 (a value to encode, not a flag)
    return "true" if value else "false"


#: Formatting by exact type: one dict lookup per value instead of an
#: isinstance chain; anything else (None, subclasses) goes through `_field`.
_BY_TYPE: dict[type, Callable[[Any], str | None]] = {
    bool: _bool,
    int: _int,
    str: _field_str,
    type(None): lambda _: None,
}

_ENVELOPE = ("boot", "seq", "received_ms", "device_clock", "device_ts_ms")
#: The fields each measurement carries after the envelope's, in order: the
#: payload model's own (storage.stored_fields).
_FIELDS: dict[type, tuple[str, ...]] = {model: stored_fields(model) for model in MEASUREMENTS}


def to_line(rec: Record) -> str:
    """One point; raises StorageError for a message type without a measurement."""
    msg = rec.message
    key = (type(msg), rec.device, rec.room, rec.building, rec.floor)
    head = _heads.get(key)
    if head is None:
        measurement = MEASUREMENTS.get(type(msg))
        if measurement is None:
            raise StorageError(f"no measurement for {type(msg).__name__}")
        if len(_heads) >= _HEADS_MAX:  # a registry rewritten many times over
            _heads.clear()
        head = _heads[key] = _head(measurement, rec)
    encoded = [f"boot={msg.boot}i", f"seq={msg.seq}i", f"received_ms={rec.received_ms}i"]
    if msg.ts is None:
        encoded.append("device_clock=false")
    elif rec.ts_flagged:
        # Dated by its arrival; the device's own, untrusted time kept beside it.
        encoded += ["device_clock=false", f"device_ts_ms={msg.ts}i"]
    else:
        encoded.append("device_clock=true")
    by_type = _BY_TYPE
    names = _FIELDS[type(msg)]
    for name in names:
        value = getattr(msg, name)
        text = by_type.get(type(value), _field)(value)
        if text is not None:
            encoded.append(f"{name}={text}")
    if type(msg) is Telemetry and msg.model_extra:
        for name, value in msg.model_extra.items():
            # Device extras, prefixed so they never clash.
            if name.isidentifier() and name not in names and name not in _ENVELOPE:
                text = _field(value)
                if text is not None:
                    encoded.append(f"x_{name}={text}")
    return f"{head} {','.join(encoded)} {point_time_ns(rec)}"
