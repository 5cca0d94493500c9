"""Device-outage alerts: one node, or one building at once, and they clear."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mamaroom.config import AlertSettings
from mamaroom.contract import Registry, RegistryRoom, RoomState, RoomStateName
from server.alerts_db import AlertsDb
from server.services.alerts import AlertService
from server.services.fanout import Fanout
from server.services.outages import OutageWatch
from server.services.rooms import LiveRooms
from tests.support import DeviceFactory, Mosquitto, Proc, Services, wait_for

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def registry() -> Registry:
    rooms = [
        RegistryRoom(
            id=f"A-{i}", name=f"A{i}", name_en=f"A{i}", building="A", floor=i, device=f"a-{i}"
        )
        for i in range(6)
    ]
    rooms += [RegistryRoom(id="B-1", name="B1", name_en="B1", building="B", floor=1, device="b-1")]
    return Registry(version=1, updated_at=T0, rooms=rooms)


def set_rooms(live: LiveRooms, offline: set[str], since: datetime) -> None:
    for r in registry().rooms:
        state = RoomStateName.OFFLINE if r.id in offline else RoomStateName.FREE
        live.set_state(r.id, RoomState(room=r.id, state=state, since=since, device=r.device))


def test_one_node_then_a_whole_building(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, str | None, str]]:
        db = AlertsDb(tmp_path / "server.sqlite")
        await db.open()
        alerts = AlertService(db)
        live = LiveRooms(ZoneInfo("Asia/Shanghai"), Fanout())
        await live.set_registry(registry())
        watch = OutageWatch(live, alerts, AlertSettings(device_offline_after_s=300))
        set_rooms(live, {"B-1"}, T0)
        await watch.check(T0 + timedelta(seconds=299))  # not yet 5 minutes
        assert await db.query() == []
        await watch.check(T0 + timedelta(seconds=300))
        set_rooms(live, {"B-1", "A-0", "A-1", "A-2", "A-3"}, T0)  # building A loses power
        await watch.check(T0 + timedelta(seconds=400))
        set_rooms(live, set(), T0 + timedelta(seconds=500))  # everything back
        await watch.check(T0 + timedelta(seconds=600))
        rows = [(a["kind"], a["subject"], a["status"]) for a in await db.query()]
        await db.close()
        return sorted(rows, key=lambda r: (r[0], r[1] or "", r[2]))

    assert asyncio.run(scenario()) == [
        ("building_offline", "A", "resolved"),  # one alert, not four
        ("device_offline", "b-1", "resolved"),
    ]


def test_a_dead_node_raises_device_offline_in_the_running_server(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    svc = Services(broker, tmp_path, rooms_csv, MAMAROOM_ALERTS__DEVICE_OFFLINE_AFTER_S="1").start()
    sim = Proc("simulate", ["simulate", "--rooms", "1"], svc.env, svc.workdir).start()
    try:
        wait_for(lambda: svc.room("T1-0101")["state"] != "offline", what="room live")
        sim.kill()  # the last will marks it offline

        def dev_a_alerts(**params: str) -> list[dict[str, Any]]:
            return [
                a
                for a in svc.admin(
                    "GET", "/api/alerts", params={"kind": "device_offline", **params}
                ).json()
                if a["subject"] == "dev-a"
            ]

        # Only the open one: on a slow machine the node may have been late on
        # its first connect, raised an alert then, and cleared it on arrival.
        [alert] = wait_for(
            lambda: dev_a_alerts(status="open"),
            timeout=60,
            what="device_offline alert",
            detail=svc.logs,
        )
        assert alert["room"] == "T1-0101"
        sim = Proc("simulate2", ["simulate", "--rooms", "1"], svc.env, svc.workdir).start()
        wait_for(
            lambda: svc.admin("GET", f"/api/alerts/{alert['id']}").json()["status"] == "resolved",
            timeout=60,
            what="the alert cleared when the node came back",
            detail=svc.logs,
        )
        assert dev_a_alerts(status="open") == []
    finally:
        sim.stop()
        svc.stop()


def test_the_welfare_check_raises_gently_and_clears(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, device_factory: DeviceFactory
) -> None:
    svc = Services(broker, tmp_path, rooms_csv, MAMAROOM_ALERTS__WELFARE_AFTER_S="600").start()
    try:
        dev = device_factory("dev-a")
        dev.occupancy(True, radar="still", still_s=300)  # 5 min still: nothing yet
        dev.occupancy(True, radar="still", still_s=610)  # over 10 min: knock
        [alert] = wait_for(
            lambda: svc.admin("GET", "/api/alerts", params={"kind": "welfare"}).json(),
            what="welfare alert",
            detail=svc.logs,
        )
        assert (alert["room"], alert["priority"], alert["status"]) == ("T1-0101", "low", "open")
        dev.occupancy(True, radar="moving", still_s=0)  # she moves: all is well
        wait_for(
            lambda: svc.admin("GET", f"/api/alerts/{alert['id']}").json()["status"] == "resolved",
            what="welfare alert cleared",
        )
        assert svc.room("T1-0101")["state"] == "occupied"  # never shown to the public
    finally:
        svc.stop()
