"""Records as InfluxDB line protocol: the schema of docs/storage.md.

Timestamps are nanoseconds: the message's time in ms (device time, or the
first arrival when the device has no clock) with `seq mod 10^6` in the
sub-millisecond digits. A redelivered message therefore becomes the very same
point (InfluxDB overwrites it instead of adding one), and two messages of one
device in the same millisecond never collide.
"""

from __future__ import annotations

from mamaroom.contract import Call, Occupancy, Telemetry
from mamaroom.storage import Record, StorageError

MEASUREMENTS = {Occupancy: "occupancy", Telemetry: "telemetry", Call: "call"}


def point_time_ns(rec: Record) -> int:
    return rec.time_ms * 1_000_000 + rec.message.seq % 1_000_000


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
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
    fields: dict[str, object] = {"boot": msg.boot, "seq": msg.seq,
                                 "received_ms": rec.received_ms,
                                 "device_clock": msg.ts is not None}
    if isinstance(msg, Occupancy):
        fields.update(occupied=msg.occupied, source=msg.source, radar=msg.radar,
                      still_s=msg.still_s)
    elif isinstance(msg, Telemetry):
        fields.update(uptime_s=msg.uptime_s, rssi=msg.rssi, heap_free=msg.heap_free,
                      fw=msg.fw, reset_reason=msg.reset_reason)
        for key_, value in (msg.model_extra or {}).items():
            if key_.isidentifier() and key_ not in fields:
                fields[f"x_{key_}"] = value  # device extras, prefixed so they never clash
    elif isinstance(msg, Call):
        fields.update(action=msg.action, call_id=msg.call_id, status=msg.status)
    encoded = []
    for name, value in fields.items():
        text = _field(value)
        if text is not None:
            encoded.append(f"{name}={text}")
    return f"{head} {','.join(encoded)} {point_time_ns(rec)}"
