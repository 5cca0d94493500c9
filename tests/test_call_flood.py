"""One node pressing with a new call_id again and again (a fault, or an
attack) gives one alert for its room, paged once; every press is answered
under its own call_id, so the node stops repeating each.

Measured on main before: 200 presses with distinct call_ids in 2 s gave 200
alerts and 200 IM pages, repeated every 30 s."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import Device, Mosquitto, Services, wait_for
from tests.test_paging_faults import ImHook

PRESSES = 200
TEXT = "紧急呼叫：测试楼1层母婴室（T1-0101）\nCALL Test Bldg 1F (T1-0101)"  # as IM shows it


def test_a_flood_of_presses_is_one_alert_paged_once(
        broker: Mosquitto, tmp_path: Path, rooms_csv: Path) -> None:
    im = ImHook()
    svc = Services(broker, tmp_path, rooms_csv,
                   MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps(
                       {"desk": f"json://127.0.0.1:{im.port}/hook"}),
                   MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "im": ["desk"]}]').start()
    dev = Device(broker.port, "dev-a")
    try:
        for i in range(PRESSES):
            dev.call("press", f"flood-{i}")
        for i in range(PRESSES):
            wait_for(lambda i=i: "received" in dev.statuses(f"flood-{i}"), timeout=60,
                     what=f"received for flood-{i}", detail=svc.logs)
        calls = svc.admin("GET", "/api/alerts", params={"kind": "call"}).json()
        assert len(calls) == 1 and calls[0]["call_id"] == "flood-0"
        timeline = svc.admin("GET", f"/api/alerts/{calls[0]['id']}").json()["timeline"]
        assert sum(e["what"] == "joined" for e in timeline) == PRESSES - 1
        wait_for(lambda: TEXT in im.messages, what="the page")
        # The staff key on any joined press ends the one call, and every press hears it.
        dev.call("reset", f"flood-{PRESSES - 1}")
        wait_for(lambda: svc.admin("GET", f"/api/alerts/{calls[0]['id']}").json()["status"]
                 == "resolved", what="resolved by a joined press's reset")
        wait_for(lambda: all("resolved" in dev.statuses(f"flood-{i}") for i in range(PRESSES)),
                 timeout=60, what="resolved told to every press")
        assert im.messages.count(TEXT) == 1
    finally:
        dev.close()
        svc.stop()
        im.close()
