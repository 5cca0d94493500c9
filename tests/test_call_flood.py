"""One node pressing with a new call_id again and again (a fault, or an
attack) gives one alert for its room, paged once; every press is answered
under its own call_id, so the node stops repeating each.

Measured on main before: 200 presses with distinct call_ids in 2 s gave 200
alerts and 200 IM pages, repeated every 30 s."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support import Device, Mosquitto, Services, wait_for
from tests.test_paging_faults import ImHook

PRESSES = 200
TEXT = "紧急呼叫：测试楼1层母婴室（T1-0101）\nCALL Test Bldg 1F (T1-0101)"  # as IM shows it


def test_a_flood_of_presses_is_one_alert_paged_once(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    im = ImHook()
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{im.port}/hook"}),
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "im": ["desk"]}]',
    ).start()
    dev = Device(broker.port, "dev-a")
    try:
        for i in range(PRESSES):
            dev.call("press", f"flood-{i}")
        for i in range(PRESSES):
            wait_for(
                lambda: "received" in dev.statuses(f"flood-{i}"),  # noqa: B023 (polled before the loop moves on)
                timeout=60,
                what=f"received for flood-{i}",
                detail=svc.logs,
            )
        calls = svc.admin("GET", "/api/alerts", params={"kind": "call"}).json()
        assert len(calls) == 1 and calls[0]["call_id"] == "flood-0"
        timeline = svc.admin("GET", f"/api/alerts/{calls[0]['id']}").json()["timeline"]
        assert sum(e["what"] == "joined" for e in timeline) == PRESSES - 1
        wait_for(lambda: TEXT in im.messages, what="the page")
        # The staff key on any joined press ends the one call, and every press hears it.
        dev.call("reset", f"flood-{PRESSES - 1}")
        wait_for(
            lambda: (
                svc.admin("GET", f"/api/alerts/{calls[0]['id']}").json()["status"] == "resolved"
            ),
            what="resolved by a joined press's reset",
        )
        wait_for(
            lambda: all("resolved" in dev.statuses(f"flood-{i}") for i in range(PRESSES)),
            timeout=60,
            what="resolved told to every press",
        )
        assert im.messages.count(TEXT) == 1
    finally:
        dev.close()
        svc.stop()
        im.close()


def test_two_servers_raising_the_same_call_at_once_make_one_alert(tmp_path: Path) -> None:
    """Two servers share one database and both hear every press: the
    look-then-insert of raise_call runs under the write lock, so they agree
    on one alert (before: both could see none and both insert)."""
    import sqlite3
    import threading

    from server.alerts_db import AlertsDb

    path = tmp_path / "server.sqlite"

    def server(results: list[bool], go: threading.Event) -> None:
        async def run() -> None:
            db = AlertsDb(path)
            await db.open()
            go.wait()
            for i in range(50):
                _, created = await db.raise_call(
                    room=f"R-{i:04d}",
                    device=f"d-{i}",
                    call_id="c-1",
                    at_ms=i,
                    channel="button",
                    test=False,
                )
                results.append(created)
            await db.close()

        asyncio.run(run())

    go = threading.Event()
    results: list[list[bool]] = [[], []]
    threads = [threading.Thread(target=server, args=(r, go)) for r in results]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(timeout=120)
    # Both servers opened the database and raised every call (before: one of
    # them could fail to open it, "database is locked", and the other alone
    # passed the test).
    assert len(results[0]) == len(results[1]) == 50
    assert sum(results[0]) + sum(results[1]) == 50  # each call created exactly once
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 50
    con.close()
