"""Emergency calls end to end: a call is committed before the node hears
`received`, follows staff through to `resolved`, and is never lost."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from typing import Any

from mamaroom.contract import PRESS_REPEAT_MS
from tests.support import Device, DeviceFactory, Services, sse_events, wait_for


def alerts(svc: Services, **params: str) -> list[dict[str, Any]]:
    r = svc.admin("GET", "/api/alerts", params=params)
    r.raise_for_status()
    return list(r.json())


def test_a_call_from_press_to_reset(services: Services, device_factory: DeviceFactory) -> None:
    dev: Device = device_factory("dev-a")
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    for _ in range(3):  # the node re-publishes its press until `received`
        dev.call("press", "a-1-1")
    wait_for(lambda: "received" in dev.statuses("a-1-1"), what="call_ack received")
    [alert] = alerts(services)
    assert (alert["room"], alert["status"], alert["call_id"]) == ("T1-0101", "open", "a-1-1")
    # The public sees an occupied room, never an emergency.
    public = services.wait_room_state("T1-0101", "occupied")
    assert "call" not in str(public) and "alert" not in str(public)
    assert services.http.get("/api/alerts").status_code == 401  # staff only

    r = services.admin("POST", f"/api/alerts/{alert['id']}/ack")
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    wait_for(lambda: "acknowledged" in dev.statuses("a-1-1"), what="acknowledged at the node")
    dev.call("shown", "a-1-1", status="acknowledged")
    dev.call("presence", "a-1-1")
    wait_for(lambda: "arrived" in dev.statuses("a-1-1"), what="arrived at the node")
    dev.call("reset", "a-1-1")
    wait_for(lambda: "resolved" in dev.statuses("a-1-1"), what="resolved at the node")
    services.wait_room_state("T1-0101", "free")

    full = services.admin("GET", f"/api/alerts/{alert['id']}").json()
    steps = [
        e["what"] for e in full["timeline"] if e["what"] not in ("escalated", "nobody to page")
    ]
    assert steps == ["raised", "acknowledged", "shown", "arrived", "resolved"]
    # These services page nobody (paging.allow_no_target): the alert says so.
    assert full["nobody"] is True and full["paging"] == {}
    assert [e["what"] for e in full["timeline"]].count("nobody to page") == 1
    assert [e["detail"] for e in full["timeline"] if e["what"] == "shown"] == ["acknowledged"]
    assert full["escalation_level"] == 1  # the first tier started at once
    assert all(v is not None and v >= 0 for v in full["response_s"].values())
    # The contract's field names, ISO 8601 (UTC), beside the stored ms.
    for step in ("raised", "acknowledged", "arrived", "resolved"):
        iso = full[f"{step}_at"]
        assert iso.endswith("Z")
        assert datetime.fromisoformat(iso).timestamp() * 1000 == full[f"{step}_at_ms"]
    assert all(e["at"].endswith("Z") for e in full["timeline"])
    assert services.admin("GET", "/api/alerts/999").status_code == 404


def test_a_database_that_refuses_the_call_and_a_kill_lose_nothing(
    services: Services, device_factory: DeviceFactory
) -> None:
    """The database is locked (it cannot commit): the call goes to the call
    journal, the node hears `received`, staff see it. The server is then
    killed with the call still only in the journal; after the restart the
    call is committed, exactly once."""
    dev: Device = device_factory("dev-b")
    db_path = services.workdir / "data" / "server.sqlite"
    assert alerts(services) == []  # logged in before the lock (a login writes)
    lock = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    lock.execute("BEGIN EXCLUSIVE")  # the server cannot commit the alert
    stop = threading.Event()

    def node_repeats_press() -> None:  # as the firmware does: every 3 s until received
        while not stop.is_set() and "received" not in dev.statuses("b-1-1"):
            dev.call("press", "b-1-1")
            stop.wait(PRESS_REPEAT_MS / 1000)

    repeater = threading.Thread(target=node_repeats_press, daemon=True)
    try:
        repeater.start()
        wait_for(
            lambda: "received" in dev.statuses("b-1-1"),
            timeout=30,
            what="received from the journal while the database is locked",
            detail=services.logs,
        )
        assert "kept in the call journal" in services.server.log()
        # The database's worker may still be waiting out SQLite's lock timeout.
        listed = services.admin("GET", "/api/alerts", timeout=30).json()
        [shown] = [a for a in listed if a["call_id"] == "b-1-1"]
        assert shown["id"] < 0 and shown["provisional"] and shown["status"] == "open"
        services.server.kill()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    stop.set()
    repeater.join(10)
    services.start_server()
    found = wait_for(
        lambda: [a for a in alerts(services) if a["call_id"] == "b-1-1" and a["id"] > 0],
        timeout=30,
        what="the call committed",
    )
    assert len(found) == 1 and found[0]["room"] == "T1-0201"
    assert [a for a in alerts(services) if a["call_id"] == "b-1-1"] == found  # exactly once
    assert services.http.get("/readyz").json()["checks"]["call_journal"] == "ok"


def test_a_node_back_online_hears_its_open_calls_again(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev: Device = device_factory("dev-a")
    dev.call("press", "a-2-1")
    wait_for(lambda: "received" in dev.statuses("a-2-1"), what="received")
    dev.close()  # the node drops off and comes back (a reboot)
    again: Device = device_factory("dev-a", boot=2)
    wait_for(lambda: "received" in again.statuses("a-2-1"), what="status re-sent on online")


def test_the_simulator_calls_like_a_node(services: Services) -> None:
    from tests.support import Proc

    sim = Proc(
        "simulate",
        ["simulate", "--rooms", "1", "--speed", "3600", "--seed", "3", "--call-every", "0.5"],
        services.env,
        services.workdir,
    ).start()
    try:
        opened = wait_for(
            lambda: a[0] if (a := alerts(services)) else None,
            timeout=60,
            what="a simulated call",
            detail=sim.log_tail,
        )
        services.admin("POST", f"/api/alerts/{opened['id']}/ack").raise_for_status()
        # The simulated staff walk over (presence) and reset the call in the room.
        done = wait_for(
            lambda: (
                (a := services.admin("GET", f"/api/alerts/{opened['id']}").json())["status"]
                == "resolved"
                and a
            ),
            timeout=60,
            what="call resolved by the staff key",
            detail=sim.log_tail,
        )
        steps = [
            e["what"]
            for e in done["timeline"]
            if e["what"] not in ("shown", "escalated", "nobody to page")
        ]
        assert steps == ["raised", "acknowledged", "arrived", "resolved"]
        # The node showed every status on its lamp and said so.
        wait_for(
            lambda: (
                [
                    e["detail"]
                    for e in services.admin("GET", f"/api/alerts/{opened['id']}").json()["timeline"]
                    if e["what"] == "shown"
                ]
                == ["received", "acknowledged", "arrived", "resolved"]
            ),
            what="every status shown",
        )
    finally:
        sim.stop()


def test_the_staff_stream_carries_alerts_and_the_public_one_does_not(
    services: Services, device_factory: DeviceFactory
) -> None:
    import json

    token = services.login("admin", Services.ADMIN_PASSWORD)
    dev: Device = device_factory("dev-a")
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    seen: dict[str, list[tuple[str, Any]]] = {"staff": [], "public": []}
    ready = {k: threading.Event() for k in seen}

    def listen(who: str, headers: dict[str, str]) -> None:
        for event, data in sse_events(f"{services.base_url}/api/stream", headers):
            seen[who].append((event, data))
            if event == "snapshot":
                ready[who].set()
            if event == "room" and data["id"] == "T1-0101":
                return

    threads = [
        threading.Thread(
            target=listen, args=("staff", {"Authorization": f"Bearer {token}"}), daemon=True
        ),
        threading.Thread(target=listen, args=("public", {}), daemon=True),
    ]
    for t in threads:
        t.start()
    assert all(e.wait(15) for e in ready.values())
    dev.call("press", "s-1")  # the free room turns `occupied` for the public
    for t in threads:
        t.join(30)
    staff_alerts = [d for e, d in seen["staff"] if e == "alert"]
    assert staff_alerts and staff_alerts[0]["call_id"] == "s-1"
    assert [e for e, _ in seen["public"]] == ["snapshot", "room"]  # never an alert
    assert "s-1" not in json.dumps(seen["public"])


def test_a_reused_call_id_after_resolution_is_a_new_emergency(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev: Device = device_factory("dev-a")
    dev.call("press", "a-1-5")
    wait_for(lambda: "received" in dev.statuses("a-1-5"), what="first call received")
    dev.call("reset", "a-1-5")
    wait_for(lambda: "resolved" in dev.statuses("a-1-5"), what="first call resolved")
    dev.commands.clear()
    dev.call("press", "a-1-5")  # the boot counter was reset: the same id again
    wait_for(lambda: "received" in dev.statuses("a-1-5"), what="the new call received")
    assert "resolved" not in dev.statuses("a-1-5")
    calls = [a for a in alerts(services) if a["call_id"] == "a-1-5"]
    assert sorted(a["status"] for a in calls) == ["open", "resolved"]
