"""The welfare check: a mother may have fainted, or fallen asleep holding her
baby. A room occupied while the radar has seen nothing but stillness for
`alerts.welfare_after_s` (default an hour) raises a gentle, low-priority
`welfare` alert so staff knock; it clears itself when she moves or leaves."""

from __future__ import annotations

from mamaroom.contract import Occupancy
from server.services.alert_model import AlertKind, Priority
from server.services.alerts import AlertService


class WelfareCheck:
    def __init__(self, alerts: AlertService, after_s: float) -> None:
        self._alerts = alerts
        self._after_s = after_s

    async def on_occupancy(self, device: str, room: str, msg: Occupancy) -> None:
        # still_s is the node's own count of continuous still presence.
        still_s = msg.still_s or 0
        if msg.occupied and msg.radar in ("still", None) and still_s >= self._after_s:
            await self._alerts.raise_once(
                AlertKind.WELFARE,
                device,
                priority=Priority.LOW,
                room=room,
                device=device,
                detail=f"occupied and still for {still_s // 60} min: please knock",
            )
        elif not msg.occupied or msg.radar in ("moving", "both", "none"):
            await self._alerts.clear(AlertKind.WELFARE, {device})
