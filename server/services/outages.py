"""Device-outage alerts, grouped: one node offline for longer than
`alerts.device_offline_after_s` in opening hours raises a `device_offline`
alert; when most nodes of a building drop together (power, network), one
`building_offline` alert replaces thirty. Both clear themselves."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from mamaroom.config import AlertSettings
from mamaroom.contract import RoomStateName
from server.services.alert_model import AlertKind, Priority
from server.services.alerts import AlertService
from server.services.rooms import LiveRooms, PublicRoom


class OutageWatch:
    def __init__(self, rooms: LiveRooms, alerts: AlertService, settings: AlertSettings) -> None:
        self._rooms = rooms
        self._alerts = alerts
        self._settings = settings

    def _long_offline(self, room: PublicRoom, now: datetime) -> bool:
        if room.device is None or not room.in_service or not room.open_now:
            return False
        if room.state is not RoomStateName.OFFLINE or room.since is None:
            return False  # no word from the gateway yet (e.g. just started): no verdict
        return (now - room.since).total_seconds() >= self._settings.device_offline_after_s

    async def check(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        by_building: dict[str, list[PublicRoom]] = defaultdict(list)
        for room in self._rooms.query():
            if room.device is not None:
                by_building[room.building].append(room)
        devices_down: dict[str, PublicRoom] = {}
        buildings_down: dict[str, list[PublicRoom]] = {}
        for building, rooms in by_building.items():
            down = [r for r in rooms if self._long_offline(r, now)]
            s = self._settings
            if len(down) >= max(s.building_outage_min, s.building_outage_share * len(rooms)):
                buildings_down[building] = down
            else:
                devices_down.update({r.device: r for r in down if r.device})
        for building, down in buildings_down.items():
            await self._alerts.raise_once(
                AlertKind.BUILDING_OFFLINE,
                building,
                priority=Priority.NORMAL,
                detail=f"{len(down)} of {len(by_building[building])} nodes offline in {building}",
            )
        for device, room in devices_down.items():
            await self._alerts.raise_once(
                AlertKind.DEVICE_OFFLINE,
                device,
                priority=Priority.LOW,
                room=room.id,
                device=device,
                detail=f"node {device} of room {room.id} offline since {room.since}",
            )
        for kind, current in (
            (AlertKind.BUILDING_OFFLINE, set(buildings_down)),
            (AlertKind.DEVICE_OFFLINE, set(devices_down)),
        ):
            gone = await self._alerts.open_subjects(kind) - current
            if gone:
                await self._alerts.clear(kind, gone)
