"""Decode and validate one MQTT message from the device tree."""

from __future__ import annotations

from dataclasses import dataclass

from mamaroom.contract import (
    MAX_PAYLOAD_BYTES,
    ContractError,
    DeviceStatus,
    Envelope,
    Kind,
    RejectReason,
    parse_device_topic,
    parse_payload,
    parse_status,
)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    device: str
    status: DeviceStatus
    #: A retained status is old news from the broker, not a sign of life.
    retained: bool


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    device: str
    kind: Kind
    message: Envelope


Inbound = StatusUpdate | DeviceMessage


def decode(topic: str, payload: bytes, retained: bool) -> Inbound | None:
    """A valid message, None for traffic not meant for the gateway (`cmd`),
    or ContractError naming the reason."""
    device, kind = parse_device_topic(topic)
    if kind is Kind.CMD:
        return None  # server → device; the gateway only overhears it
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(RejectReason.OVERSIZE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if kind is Kind.STATUS:
        if not payload:
            return None  # an operator clearing the retained status
        return StatusUpdate(device, parse_status(payload), retained)
    return DeviceMessage(device, kind, parse_payload(kind, payload))
