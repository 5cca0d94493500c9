"""What an alert is: its kinds, statuses and priorities, the record the
alert service and its database pass around, and the shape the API and the
staff stream show."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict, cast

from pydantic import BaseModel


class AlertKind(StrEnum):
    CALL = "call"  # an emergency call from a room's button
    DEVICE_OFFLINE = "device_offline"  # a node silent in its opening hours
    BUILDING_OFFLINE = "building_offline"  # many of a building's nodes at once
    WELFARE = "welfare"  # a room occupied and still for a long time
    PAGING_LINK = "paging_link"  # a paging channel or destination is down


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ARRIVED = "arrived"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


#: How far along an alert is; a step is only ever taken forwards.
ORDER: dict[str, int] = {
    AlertStatus.OPEN: 0,
    AlertStatus.ACKNOWLEDGED: 1,
    AlertStatus.ARRIVED: 2,
    AlertStatus.RESOLVED: 3,
    AlertStatus.CANCELLED: 3,
}
#: Not open any more: nothing to page, nothing to show as pending.
CLOSED = frozenset({AlertStatus.RESOLVED, AlertStatus.CANCELLED})


class Priority(StrEnum):
    HIGH = "high"  # calls: paged
    NORMAL = "normal"  # a building down, a paging link down
    LOW = "low"  # one node down, a welfare knock


class TimelineEntry(TypedDict):
    at_ms: int
    what: str
    who: str | None
    channel: str | None
    detail: str | None


class Alert(TypedDict):
    """One alert as stored (alerts_db.py) and held in memory (alerts.py).
    Read back from the database, the journal or another server, it goes
    through `with_enums`. The enums are StrEnums: they compare equal to, and
    are stored and sent as, their strings."""

    id: int  # negative: provisional, held in the call journal (alerts.py)
    kind: AlertKind
    priority: Priority
    room: str | None
    device: str | None
    call_id: str | None
    status: AlertStatus
    raised_at_ms: int
    acknowledged_at_ms: int | None
    acknowledged_by: str | None
    arrived_at_ms: int | None
    resolved_at_ms: int | None
    resolved_by: str | None
    escalation_level: int
    next_page_ms: int | None
    test: bool
    subject: str | None
    #: Each page target's last outcome, "channel:target" → {ok, at_ms, detail}.
    paging: dict[str, Any]
    nobody: bool
    timeline: NotRequired[list[TimelineEntry]]
    #: Provisional alerts only: held in the journal, not yet in the database.
    provisional: NotRequired[bool]
    journal_slot: NotRequired[int | None]
    #: A provisional alert once committed: the stored alert that replaces it.
    superseded_by: NotRequired[int]


def with_enums(raw: dict[str, Any]) -> Alert:
    """An alert read back as plain values (a database row, the call journal,
    another server's JSON) with its kind, priority and status as the enums;
    ValueError or KeyError if one is not a known value."""
    raw["kind"] = AlertKind(raw["kind"])
    raw["priority"] = Priority(raw["priority"])
    raw["status"] = AlertStatus(raw["status"])
    return cast(Alert, raw)


class TimelineOut(BaseModel):
    at_ms: int
    at: str | None
    what: str
    who: str | None = None
    channel: str | None = None
    detail: str | None = None


class ResponseTimes(BaseModel):
    """Seconds from raised to each step; null until the step is taken."""

    acknowledged: float | None
    arrived: float | None
    resolved: float | None


class AlertOut(BaseModel):
    """An alert as GET /api/alerts and the staff stream show it: the stored
    `*_at_ms` integers with the contract's ISO 8601 times beside them."""

    id: int
    kind: AlertKind
    priority: Priority
    room: str | None
    device: str | None
    call_id: str | None
    status: AlertStatus
    raised_at_ms: int
    raised_at: str | None
    acknowledged_at_ms: int | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    arrived_at_ms: int | None
    arrived_at: str | None
    resolved_at_ms: int | None
    resolved_at: str | None
    resolved_by: str | None
    escalation_level: int
    next_page_ms: int | None
    test: bool
    subject: str | None
    paging: dict[str, Any]
    nobody: bool
    response_s: ResponseTimes
    timeline: list[TimelineOut] | None = None
    provisional: bool | None = None
    superseded_by: int | None = None
