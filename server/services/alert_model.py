"""What an alert is: its kinds, statuses and priorities, the record the
alert service and its database pass around, and the shape the API and the
staff stream show."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

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
    Strings from the database compare equal to the enums' members."""

    id: int  # negative: provisional, held in the call journal (alerts.py)
    kind: str  # AlertKind
    priority: str  # Priority
    room: str | None
    device: str | None
    call_id: str | None
    status: str  # AlertStatus
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
