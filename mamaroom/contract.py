"""The contract between firmware, gateway, server and pages, in code, once.

Every part imports topics and payload models from here; `docs/protocol.md`
restates them in words and `tests/test_contract.py` pins them down. The
firmware mirrors this module in MicroPython.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

PREFIX = "mr/v1"
REGISTRY_TOPIC = f"{PREFIX}/registry"
#: Every device's every message (the gateway's subscription); the topics under
#: it start with DEVICE_TOPIC_PREFIX.
DEVICE_TREE = f"{PREFIX}/dev/#"
DEVICE_TOPIC_PREFIX = f"{PREFIX}/dev/"
ROOM_STATE_SUBSCRIPTION = f"{PREFIX}/room/+/state"
#: Every gateway's `status` and `stats` (the server and the watchdog follow them).
GATEWAY_SUBSCRIPTION = f"{PREFIX}/gateway/+/+"
GATEWAY_TOPIC_PREFIX = f"{PREFIX}/gateway/"
#: Every server's alert changes, for the other servers sharing its database.
SERVER_ALERT_SUBSCRIPTION = f"{PREFIX}/server/+/alert"
SERVER_STATUS_SUBSCRIPTION = f"{PREFIX}/server/+/status"
SERVER_TOPIC_PREFIX = f"{PREFIX}/server/"
#: Payloads larger than this are rejected unread (contract: > 4 KiB).
MAX_PAYLOAD_BYTES = 4096
#: A node publishes `press` again this often until the server's `call_ack`
#: says `received` (or later), and `presence` / `reset` until the status has
#: caught up: the end-to-end acknowledgement of a call (docs/protocol.md).
PRESS_REPEAT_MS = 3000
#: The largest firmware bundle a node takes (firmware/ota.py); an `ota`
#: command's `size` is at most this.
MAX_BUNDLE_BYTES = 1 << 20

DEVICE_ID_PATTERN = r"^[a-z0-9-]{1,32}$"
ROOM_ID_PATTERN = r"^[A-Za-z0-9-]{1,32}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_ROOM_ID = re.compile(ROOM_ID_PATTERN)

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
RoomId = Annotated[str, Field(pattern=ROOM_ID_PATTERN)]
#: Opening hours or a shift, `HH:MM-HH:MM` in site time (may cross midnight;
#: `24:00` only as an end), or empty for always. Strict, because the live room
#: list evaluates it every 30 s: a bad value must be refused where it enters.
HOURS_PATTERN = r"^$|^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$"
_HOURS_RE = re.compile(HOURS_PATTERN)


def check_hours(value: str) -> str:
    """The value if it is valid opening hours, else ValueError saying why."""
    if not _HOURS_RE.match(value):
        raise ValueError(f"hours must look like 08:00-20:00 (24:00 only as an end), got {value!r}")
    if value and value[:5] == value[6:]:
        raise ValueError(f"hours start and end at the same time: {value!r}")
    return value


Hours = Annotated[str, Field(max_length=11), AfterValidator(check_hours)]
# SQLite and most stores hold signed 64-bit integers; larger is junk, not data.
_Int64 = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class Kind(StrEnum):
    """The message kinds under `mr/v1/dev/{device}/`."""

    STATUS = "status"
    OCCUPANCY = "occupancy"
    CALL = "call"
    TELEMETRY = "telemetry"
    CMD = "cmd"


class RejectReason(StrEnum):
    """Why the gateway refused a message; each has its own counter."""

    BAD_TOPIC = "bad_topic"
    OVERSIZE = "oversize"
    NOT_JSON = "not_json"
    INVALID_PAYLOAD = "invalid_payload"
    UNKNOWN_DEVICE = "unknown_device"
    #: Over the device's message-rate budget (`gateway.device_rate_per_s`);
    #: calls have their own, larger budget (`gateway.call_rate_per_s`).
    RATE_LIMITED = "rate_limited"


class ContractError(ValueError):
    """A topic or payload that breaks the contract; `reason` says how."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# --- identifiers and topics ------------------------------------------------


def is_device_id(value: str) -> bool:
    return bool(_DEVICE_ID.fullmatch(value))


def is_room_id(value: str) -> bool:
    return bool(_ROOM_ID.fullmatch(value))


def device_topic(device: str, kind: Kind) -> str:
    if not is_device_id(device):
        raise ValueError(f"not a device id: {device!r}")
    return f"{PREFIX}/dev/{device}/{kind.value}"


def room_state_topic(room: str) -> str:
    if not is_room_id(room):
        raise ValueError(f"not a room id: {room!r}")
    return f"{PREFIX}/room/{room}/state"


class DeviceTopic(NamedTuple):
    device: str
    kind: Kind


def parse_device_topic(topic: str) -> DeviceTopic:
    """`mr/v1/dev/{device}/{kind}` → (device, kind), or ContractError(bad_topic)."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "mr" or parts[1] != "v1" or parts[2] != "dev":
        raise ContractError(RejectReason.BAD_TOPIC, f"outside mr/v1/dev/{{device}}/...: {topic!r}")
    device, kind = parts[3], parts[4]
    if not is_device_id(device):
        raise ContractError(RejectReason.BAD_TOPIC, f"bad device id in topic: {device!r}")
    try:
        return DeviceTopic(device, Kind(kind))
    except ValueError:
        raise ContractError(RejectReason.BAD_TOPIC, f"unknown message kind: {kind!r}") from None


def parse_room_state_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or parts[:3] != ["mr", "v1", "room"] or parts[4] != "state":
        raise ValueError(f"not a room state topic: {topic!r}")
    if not is_room_id(parts[3]):
        raise ValueError(f"bad room id in topic: {parts[3]!r}")
    return parts[3]


def device_subscription(kind: Kind) -> str:
    """`mr/v1/dev/+/{kind}`: one message kind of every device."""
    return f"{PREFIX}/dev/+/{kind.value}"


def shared_subscription(group: str, topic_filter: str) -> str:
    """`$share/{group}/{filter}`: the broker gives each message to one member of the group."""
    return f"$share/{group}/{topic_filter}"


class GatewayTopicKind(StrEnum):
    """What a gateway publishes about itself under `mr/v1/gateway/{client_id}/`."""

    #: Plain text `online`, or `offline` on a clean stop and as its last will (retained).
    STATUS = "status"
    #: GatewayStats, every 10 s (retained).
    STATS = "stats"


class GatewayTopic(NamedTuple):
    gateway: str
    kind: GatewayTopicKind


def gateway_topic(client_id: str, kind: GatewayTopicKind) -> str:
    return f"{PREFIX}/gateway/{client_id}/{kind.value}"


def parse_gateway_topic(topic: str) -> GatewayTopic:
    """`mr/v1/gateway/{client_id}/{kind}` → (client_id, kind), or ValueError."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:3] != ["mr", "v1", "gateway"] or not parts[3]:
        raise ValueError(f"not a gateway topic: {topic!r}")
    try:
        return GatewayTopic(parts[3], GatewayTopicKind(parts[4]))
    except ValueError:
        raise ValueError(f"unknown gateway topic: {topic!r}") from None


def server_alert_topic(client_id: str) -> str:
    """Where a server tells the others of every alert change it made (QoS 1, not retained)."""
    return f"{PREFIX}/server/{client_id}/alert"


def server_status_topic(client_id: str) -> str:
    """A server's ServerStatus: `online` on connecting, `offline` on a clean
    stop and as its last will (QoS 1, retained). A `web` server is ready only
    while a server that takes calls says `online` here."""
    return f"{PREFIX}/server/{client_id}/status"


def parse_server_topic(topic: str) -> tuple[str, str]:
    """`mr/v1/server/{client_id}/{kind}` → (client_id, kind), or ValueError."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:3] != ["mr", "v1", "server"] or not parts[3]:
        raise ValueError(f"not a server topic: {topic!r}")
    return parts[3], parts[4]


class ServerStatus(BaseModel):
    """A server's retained status: whether it is up and whether it takes the
    nodes' calls (server.role `calls` or `all`)."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["online", "offline"]
    takes_calls: bool


def watchdog_ping_topic(client_id: str) -> str:
    """The watchdog's message to itself: the broker works if it comes back."""
    return f"{PREFIX}/watchdog/{client_id}/ping"


# --- device → gateway payloads ----------------------------------------------


class Envelope(BaseModel):
    """Fields every device message carries. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    #: Schema version; StrictInt so JSON `true` (== 1 in Python) is refused.
    v: Annotated[StrictInt, Field(ge=1, le=1)]
    boot: _Int64
    seq: _Int64
    #: Device time in ms since the epoch, or None when its clock is not synced.
    ts: Annotated[StrictInt, Field(ge=0, le=2**53)] | None


#: How far a device's `ts` may be from the receiver's clock, either way, to be
#: trusted (docs/protocol.md, "Device time"). Beyond it the message is kept,
#: dated by its arrival, and counted as `ts_out_of_range`; never rejected.
TS_SKEW_MS = 24 * 3600 * 1000
#: The flag (`mamaroom_gateway_flagged_total{reason=...}`) of such a message.
TS_OUT_OF_RANGE = "ts_out_of_range"


def trusted_ts(ts: int | None, received_ms: int) -> bool:
    """True when a device's `ts` is present and within TS_SKEW_MS of `received_ms`."""
    return ts is not None and -TS_SKEW_MS <= ts - received_ms <= TS_SKEW_MS


def message_time(ts: int | None, received_ms: int) -> int:
    """The time a message is filed under: its `ts` when trusted, else its arrival."""
    return ts if ts is not None and -TS_SKEW_MS <= ts - received_ms <= TS_SKEW_MS else received_ms


class Occupancy(Envelope):
    occupied: StrictBool
    source: Literal["door", "radar", "pir", "fused"]
    radar: Literal["none", "moving", "still", "both"] | None = None
    still_s: Annotated[StrictInt, Field(ge=0, le=2**31)] | None = None


class CallStatus(StrEnum):
    """How far a call has got, in order: the server tells the node (`call_ack`),
    the node shows it on the lamp and reports it back (`call` `shown`)."""

    #: The alert is durably stored (or journalled).
    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    #: Staff are in the room.
    ARRIVED = "arrived"
    RESOLVED = "resolved"


def _only_true(value: object) -> bool:
    return value is True


class Call(Envelope):
    action: Literal["press", "presence", "reset", "shown"]
    call_id: Annotated[str, Field(min_length=1, max_length=64)]
    #: With `shown`: the status the node now shows.
    status: CallStatus | None = None
    #: The node is in test mode (`test_mode` command): commissioning, not an
    #: emergency. Only JSON `true` counts; anything else reads as not a test:
    #: a call is never refused over this flag. The server goes by its own room
    #: test mode; this one is not stored.
    test: Annotated[bool, BeforeValidator(_only_true)] = False


class Telemetry(Envelope):
    # Devices may add fields (radar energies, temp_c, ...); keep them.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    # 64-bit like boot and seq: a larger value is junk no store can hold.
    uptime_s: _Int64 | None = None
    rssi: Annotated[StrictInt, Field(ge=-127, le=20)] | None = None
    heap_free: _Int64 | None = None
    fw: Annotated[str, Field(max_length=64)] | None = None
    reset_reason: Annotated[str, Field(max_length=64)] | None = None


class NodeTelemetry(Telemetry):
    """Telemetry as mamaroom's own firmware sends it (firmware/report.py).

    The gateway checks telemetry against `Telemetry` and keeps the fields below
    as a device's extra fields (SQLite's `extra` JSON, InfluxDB `x_<name>`);
    this model only names and types them, so that the firmware's tests can
    hold the node to them. `extra="forbid"`: a field the node sends must be
    named here first."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: The radar's state now (`none` while it sends nothing).
    radar: Literal["none", "moving", "still", "both"] | None = None
    radar_move_energy: StrictInt | None = None
    radar_still_energy: StrictInt | None = None
    #: Radar frames dropped as malformed since boot.
    radar_dropped: StrictInt | None = None
    #: No radar frames for a while: the radar is not counted.
    radar_stale: StrictBool | None = None
    #: Still for longer than the stuck limit: the fusion ignores the radar.
    radar_stuck: StrictBool | None = None
    #: The radar set up at boot (None: not yet).
    radar_config: StrictBool | None = None
    #: Tasks the node's supervisor restarted since boot.
    restarts: StrictInt | None = None
    mqtt_connects: StrictInt | None = None
    #: The node's clock is set from NTP.
    ntp: StrictBool | None = None
    #: The node is in test mode (the `test_mode` command).
    test_mode: StrictBool | None = None
    #: The latest update's outcome (`on trial`, `refused ...`), if any.
    ota: str | None = None
    #: Of `heap_free`, what the ESP32's MicroPython heap can still grow by
    #: (0 on the unix port's fixed heap; docs/firmware.md).
    heap_grow: StrictInt | None = None
    #: The ESP-IDF heap's free bytes (None on the unix port).
    idf_free: StrictInt | None = None


DeviceStatus = Literal["online", "offline"]

_PAYLOAD_MODELS: dict[Kind, type[Envelope]] = {
    Kind.OCCUPANCY: Occupancy,
    Kind.CALL: Call,
    Kind.TELEMETRY: Telemetry,
}
#: The payload model of each JSON message kind a device publishes.
PAYLOAD_MODELS: Mapping[Kind, type[Envelope]] = MappingProxyType(_PAYLOAD_MODELS)


def payload_fields(model: type[Envelope]) -> tuple[str, ...]:
    """A device payload's own fields, after the envelope's, in declaration order
    (what the stores keep of it besides the envelope)."""
    return tuple(name for name in model.model_fields if name not in Envelope.model_fields)


def parse_status(payload: bytes) -> DeviceStatus:
    """The retained `status` topic: plain text `online` / `offline`."""
    text = payload.strip()
    if text == b"online":
        return "online"
    if text == b"offline":
        return "offline"
    raise ContractError(
        RejectReason.INVALID_PAYLOAD, f"status must be 'online' or 'offline', got {payload[:40]!r}"
    )


def parse_payload(kind: Kind, payload: bytes) -> Envelope:
    """Validate a JSON device payload for `kind`; ContractError says why not."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(RejectReason.OVERSIZE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    model = _PAYLOAD_MODELS.get(kind)
    if model is None:
        raise ContractError(RejectReason.BAD_TOPIC, f"devices do not publish {kind.value!r}")
    try:
        # pydantic-core parses and validates in one pass (the gateway's hot path).
        return model.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ContractError(RejectReason.NOT_JSON, _summarise(exc)) from None
        if any(e["type"] == "model_type" for e in exc.errors()):
            raise ContractError(
                RejectReason.INVALID_PAYLOAD, "payload is not a JSON object"
            ) from None
        raise ContractError(RejectReason.INVALID_PAYLOAD, _summarise(exc)) from None


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# --- server → device ---------------------------------------------------------


# Every command on `mr/v1/dev/{device}/cmd`: a JSON object whose `cmd` names
# it. A node ignores (and logs) a malformed command, and one it does not know
# (firmware/contract.py `parse_cmd`; `ota` is checked by firmware/ota.py).


class CallAck(BaseModel):
    """`cmd` telling a node how far its call has got; the node shows it on the lamp."""

    model_config = ConfigDict(extra="ignore")

    cmd: Literal["call_ack"] = "call_ack"
    call_id: Annotated[str, Field(min_length=1, max_length=64)]
    status: CallStatus


class SetTestMode(BaseModel):
    """`cmd` putting a node in test mode (commissioning) or out of it: while it
    is on, its presses carry `"test": true`; it ends by itself after `minutes`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    cmd: Literal["test_mode"] = "test_mode"
    on: StrictBool
    minutes: Annotated[float, Field(gt=0, le=1440)] = 60


class Identify(BaseModel):
    """`cmd` making a node's status LED blink fast for `seconds`, to find it."""

    model_config = ConfigDict(extra="ignore", strict=True)

    cmd: Literal["identify"] = "identify"
    seconds: Annotated[StrictInt, Field(gt=0, le=600)] = 10


class OtaCommand(BaseModel):
    """`cmd` telling a node to update its firmware from a bundle
    (docs/firmware-ota.md); the node answers in its telemetry's `ota` field."""

    model_config = ConfigDict(extra="ignore", strict=True)

    cmd: Literal["ota"] = "ota"
    #: Plain HTTP, the server named by IP address (the node does no DNS look-up).
    url: Annotated[str, Field(pattern=r"^http://", max_length=256)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    version: Annotated[str, Field(min_length=1, max_length=32)]
    #: The bundle's length in bytes; optional for the node, always sent by mamaroom.
    size: Annotated[StrictInt, Field(gt=0, le=MAX_BUNDLE_BYTES)] | None = None


Command = Annotated[CallAck | SetTestMode | Identify | OtaCommand, Field(discriminator="cmd")]
_COMMAND: TypeAdapter[CallAck | SetTestMode | Identify | OtaCommand] = TypeAdapter(Command)
#: Every command a node knows, by its `cmd`.
COMMANDS: Mapping[str, type[BaseModel]] = MappingProxyType(
    {m.model_fields["cmd"].default: m for m in (CallAck, SetTestMode, Identify, OtaCommand)}
)


def parse_command(payload: bytes) -> CallAck | SetTestMode | Identify | OtaCommand:
    """A command as a node takes it; ValueError (pydantic's ValidationError)
    for anything else: too large, not JSON, not a command, an unknown `cmd`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"command of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    return _COMMAND.validate_json(payload)


# --- gateway → server, watchdog: the gateway's own figures --------------------


class GatewayStats(BaseModel):
    """Retained on `mr/v1/gateway/{client_id}/stats` every 10 s: the gateway's
    headline counters (its Prometheus metrics summed), repeated per gateway by
    the server's /metrics; the watchdog takes each live one as a heartbeat.
    A figure missing (a gateway of another release) is left out, not 0."""

    model_config = ConfigDict(extra="ignore")

    received: Annotated[float | None, Field(description="Messages received")] = None
    stored: Annotated[float | None, Field(description="New messages stored")] = None
    rejected: Annotated[
        dict[str, float],
        Field(default_factory=dict, description="Messages refused, by reason (RejectReason)"),
    ]
    flagged: Annotated[
        dict[str, float],
        Field(
            default_factory=dict,
            description="Messages kept but flagged, by reason (ts_out_of_range: dated by arrival)",
        ),
    ]
    dead_letters: Annotated[
        float | None,
        Field(description="Records a backend refused, set aside (mamaroom dead-letters)"),
    ] = None
    duplicates: Annotated[float | None, Field(description="Duplicates not stored again")] = None
    redelivered: Annotated[float | None, Field(description="Broker re-sends (DUP)")] = None
    pending: Annotated[float | None, Field(description="Delivered, not yet acknowledged")] = None
    spool_depth: Annotated[float | None, Field(description="Points spooled for InfluxDB")] = None
    spool_age_s: Annotated[
        float | None, Field(description="Age of the oldest spooled point, seconds")
    ] = None

    @classmethod
    def figures(cls) -> dict[str, str]:
        """The single figures (not the by-reason counts), name → description."""
        return {
            name: field.description or name
            for name, field in cls.model_fields.items()
            if field.annotation == float | None
        }


# --- gateway → server: derived room state -----------------------------------


class RoomStateName(StrEnum):
    FREE = "free"
    OCCUPIED = "occupied"
    OFFLINE = "offline"


class RoomState(BaseModel):
    """Retained on `mr/v1/room/{room}/state`: the gateway's view of one room."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    room: RoomId
    state: RoomStateName
    #: When the room entered this state.
    since: datetime | None
    device: DeviceId | None
    #: Why an offline room is offline: `no_device`, `device_offline`, `silent`, `no_data`.
    reason: str | None = None
    #: When the gateway last heard from the device (any message).
    last_seen: datetime | None = None


# --- server → gateways: the room registry -----------------------------------


class RegistryRoom(BaseModel):
    """One room as the registry describes it (the rooms CSV's columns)."""

    model_config = ConfigDict(extra="ignore")

    id: RoomId
    name: Annotated[str, Field(min_length=1, max_length=100)]
    name_en: Annotated[str, Field(min_length=1, max_length=100)]
    building: Annotated[str, Field(min_length=1, max_length=100)]
    building_en: Annotated[str, Field(max_length=100)] = ""
    floor: int
    device: DeviceId | None = None
    #: `public` (everyone in the park) or `company` (one company's staff only).
    access: Literal["public", "company"] = "public"
    company: Annotated[str, Field(max_length=100)] = ""
    #: Opening hours `HH:MM-HH:MM`, or empty for always open.
    hours: Hours = ""
    amenities: list[str] = Field(default_factory=list)
    in_service: bool = True
    #: Being cleaned right now (set by staff; the room is not offered meanwhile).
    cleaning: bool = False


class Registry(BaseModel):
    """Retained on `mr/v1/registry` by the server; `version` grows on every edit."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    version: Annotated[int, Field(ge=0)]
    updated_at: datetime
    rooms: list[RegistryRoom]

    def device_rooms(self) -> dict[str, str]:
        """device id → room id, for the rooms that have a device."""
        return {r.device: r.id for r in self.rooms if r.device}


def dumps(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()
