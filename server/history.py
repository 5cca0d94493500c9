"""Past emergency calls from the history generator, stored as resolved alerts
(with their response times) in the server's database."""

from __future__ import annotations

from mamaroom.config import Settings
from mamaroom.history import HistoricCall
from server.alerts_db import AlertsDb


async def store_past_calls(settings: Settings, calls: list[HistoricCall]) -> int:
    db = AlertsDb(settings.server_db_path)
    await db.open()
    try:
        added = 0
        for c in calls:
            added += await db.add_past_call(
                room=c.room, device=c.device, call_id=c.call_id, raised_ms=c.raised_ms,
                acknowledged_ms=c.acknowledged_ms, arrived_ms=c.arrived_ms,
                resolved_ms=c.resolved_ms)
        return added
    finally:
        await db.close()
