"""Past emergency calls from the history generator, stored as resolved alerts
(with their response times) in the server's database."""

from __future__ import annotations

from dataclasses import dataclass

from mamaroom.config import Settings
from server.alerts_db import AlertsDb


@dataclass(frozen=True)
class HistoricCall:
    """A past emergency call with its response times (ms since the epoch)."""

    room: str
    device: str
    call_id: str
    raised_ms: int
    acknowledged_ms: int
    arrived_ms: int
    resolved_ms: int


async def store_past_calls(settings: Settings, calls: list[HistoricCall]) -> int:
    db = AlertsDb(settings.server_db_path)
    await db.open()
    try:
        added = 0
        for c in calls:
            added += await db.add_past_call(
                room=c.room,
                device=c.device,
                call_id=c.call_id,
                raised_ms=c.raised_ms,
                acknowledged_ms=c.acknowledged_ms,
                arrived_ms=c.arrived_ms,
                resolved_ms=c.resolved_ms,
            )
        return added
    finally:
        await db.close()
