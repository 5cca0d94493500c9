"""Decode and validate one MQTT message from the device tree."""

from __future__ import annotations

from typing import NamedTuple

from mamaroom.contract import (
    MAX_PAYLOAD_BYTES,
    ContractError,
    DeviceStatus,
    DeviceTopic,
    Envelope,
    Kind,
    RejectReason,
    parse_device_topic,
    parse_payload,
    parse_status,
)

# NamedTuples, not frozen dataclasses: as immutable, and several times cheaper
# to build (a frozen dataclass sets each field through object.__setattr__),
# which counts at one per message.


class StatusUpdate(NamedTuple):
    device: str
    status: DeviceStatus
    #: A retained status is old news from the broker, not a sign of life.
    retained: bool


class DeviceMessage(NamedTuple):
    device: str
    kind: Kind
    message: Envelope


Inbound = StatusUpdate | DeviceMessage

#: Every message of a device comes on one of a handful of topics: parse each
#: once. Only valid topics are cached (a ContractError is raised anew each
#: time), and the bound keeps a flood of junk topics from growing memory.
#: A plain dict: cheaper per hit than an LRU's bookkeeping.
_TOPICS: dict[str, DeviceTopic] = {}
_TOPICS_MAX = 65_536


def _device_topic(topic: str) -> DeviceTopic:
    parsed = _TOPICS.get(topic)
    if parsed is None:
        parsed = parse_device_topic(topic)
        if len(_TOPICS) < _TOPICS_MAX:
            _TOPICS[topic] = parsed
    return parsed


def decode(topic: str, payload: bytes, *, retained: bool) -> Inbound | None:
    """A valid message, None for traffic not meant for the gateway (`cmd`),
    or ContractError naming the reason."""
    device, kind = _device_topic(topic)
    if kind is Kind.CMD:
        return None  # server → device; the gateway only overhears it
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(RejectReason.OVERSIZE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if kind is Kind.STATUS:
        if not payload:
            return None  # an operator clearing the retained status
        return StatusUpdate(device, parse_status(payload), retained)
    return DeviceMessage(device, kind, parse_payload(kind, payload))
