"""The server restarting, and two servers at once, on real processes.

Measured on main before: a staff-key `reset` sent while the server was down
was lost (its MQTT session was not persistent), so the alert stayed open and
kept paging; an alert raised by server B never reached consoles on server A."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import (
    Device,
    DeviceFactory,
    Mosquitto,
    Proc,
    Services,
    free_port,
    record_fault,
    sse_events,
    wait_for,
)
from tests.test_paging_faults import ImHook

TEXT = "紧急呼叫：测试楼1层母婴室（T1-0101）\nCALL Test Bldg 1F (T1-0101)"  # as IM shows it


def test_a_reset_sent_while_the_server_is_down_is_not_lost(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev: Device = device_factory("dev-a")
    dev.call("press", "r-1")
    wait_for(lambda: "received" in dev.statuses("r-1"), what="received")
    services.server.kill()  # kill -9: no goodbye to the broker
    killed = time.monotonic()
    dev.call("presence", "r-1")
    dev.call("reset", "r-1")  # sent once, while no server runs
    services.start_server()
    [alert] = services.admin("GET", "/api/alerts").json()
    done = wait_for(
        lambda: (
            (a := services.admin("GET", f"/api/alerts/{alert['id']}").json())["status"]
            == "resolved"
            and a
        ),
        timeout=30,
        what="the queued reset applied after the restart",
        detail=services.logs,
    )
    assert done["resolved_by"] == "staff key"
    wait_for(lambda: "resolved" in dev.statuses("r-1"), what="resolved at the node")
    record_fault(
        "server kill -9 between press and reset (reset sent while down)",
        "calls lost 0; the reset waited at the broker (persistent session) and "
        f"resolved the call {time.monotonic() - killed:.1f} s after the kill "
        "(restart included)",
    )


class StaffStream(threading.Thread):
    """A staff console's live stream on one server: the alerts it shows."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = base_url, token
        self.alerts: dict[int, dict[str, Any]] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            for event, data in sse_events(
                f"{self.url}/api/stream", {"Authorization": f"Bearer {self.token}"}, timeout=None
            ):
                if event == "snapshot":
                    self.ready.set()
                elif event == "alert":
                    self.alerts[data["id"]] = data
        except httpx.HTTPError:
            pass


def test_two_servers_show_each_others_alerts_and_page_once(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    im = ImHook()
    a = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{im.port}/hook"}),
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "im": ["desk"]}]',
        MAMAROOM_SERVER__CLIENT_ID="server-a",
    ).start()
    b_port = free_port()
    b_env = {**a.env, "MAMAROOM_SERVER__CLIENT_ID": "server-b", "MAMAROOM_HTTP__PORT": str(b_port)}
    b = Proc("server-b", ["server"], b_env, tmp_path).start()
    b_http = httpx.Client(base_url=f"http://127.0.0.1:{b_port}", timeout=10)
    dev = Device(broker.port, "dev-a")
    try:
        wait_for(
            lambda: b_http.get("/readyz").status_code == 200,
            timeout=60,
            what="server B ready",
            detail=b.log_tail,
        )
        token = a.login("admin", Services.ADMIN_PASSWORD)  # one database, one account
        b_auth = {"Authorization": f"Bearer {token}"}
        consoles = {
            "a": StaffStream(a.base_url, token),
            "b": StaffStream(f"http://127.0.0.1:{b_port}", token),
        }
        for c in consoles.values():
            c.start()
            assert c.ready.wait(30)

        dev.call("press", "two-1")
        wait_for(lambda: "received" in dev.statuses("two-1"), what="received")
        for name, console in consoles.items():
            wait_for(
                lambda: any(x["call_id"] == "two-1" for x in console.alerts.values()),  # noqa: B023 (polled before the loop moves on)
                timeout=30,
                what=f"the call on console {name}",
                detail=lambda: a.logs() + b.log_tail(),
            )
        [alert] = a.admin("GET", "/api/alerts").json()
        # Acknowledged on B: console A shows it, and the node hears it.
        r = b_http.post(f"/api/alerts/{alert['id']}/ack", headers=b_auth)
        assert r.status_code == 200, r.text
        wait_for(
            lambda: consoles["a"].alerts.get(alert["id"], {}).get("status") == "acknowledged",
            timeout=30,
            what="the ack on console A",
        )
        wait_for(lambda: "acknowledged" in dev.statuses("two-1"), what="acknowledged at the node")
        # One escalation for both servers: the desk was paged once, not twice.
        wait_for(lambda: TEXT in im.messages, timeout=30, what="the page")
        assert im.messages.count(TEXT) == 1
        # A, started first, escalates; killed, B takes over within the lease.
        assert "escalating the shared calls" in a.server.log()
        assert "another server escalates" in b.log()
        r = b_http.post(f"/api/alerts/{alert['id']}/resolve", headers=b_auth)
        assert r.status_code == 200, r.text  # over: the next press is a new call
        a.server.kill()
        t_kill = time.monotonic()
        dev.call("press", "two-2")
        wait_for(lambda: "received" in dev.statuses("two-2"), what="received from B alone")
        wait_for(
            lambda: im.messages.count(TEXT) == 2,
            timeout=60,
            what="the second call paged by B",
            detail=b.log_tail,
        )
        assert "escalating the shared calls" in b.log()
        record_fault(
            "two servers, the escalating one killed -9",
            "calls lost 0 of 2; a call raised once shows on both consoles, an ack "
            "on one shows on the other; paged once, not twice; the other server "
            "took over escalation and paged the next call "
            f"{time.monotonic() - t_kill:.1f} s after the kill (lease 10 s)",
        )
    finally:
        dev.close()
        b.stop()
        b_http.close()
        a.stop()
        im.close()


def test_the_call_path_in_its_own_process_and_the_web_in_another(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    """server.role: a `calls` server takes the calls, acks and pages; a `web`
    server (the one behind the proxy, taking logins) shows and acks them,
    and never subscribes to calls or pages. Registry edits on the web server
    reach the calls server."""
    im = ImHook()
    calls = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{im.port}/hook"}),
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "targets": ["im:desk"]}]',
        MAMAROOM_SERVER__CLIENT_ID="calls",
        MAMAROOM_SERVER__ROLE="calls",
    ).start()
    web_port = free_port()
    web = Proc(
        "web",
        ["server"],
        {
            **calls.env,
            "MAMAROOM_SERVER__CLIENT_ID": "web",
            "MAMAROOM_SERVER__ROLE": "web",
            "MAMAROOM_HTTP__PORT": str(web_port),
        },
        tmp_path,
    ).start()
    web_http = httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=10)
    dev = Device(broker.port, "dev-a")
    try:
        wait_for(
            lambda: web_http.get("/readyz").status_code == 200,
            timeout=60,
            what="the web server ready",
            detail=web.log_tail,
        )
        token = calls.login("admin", Services.ADMIN_PASSWORD)
        auth = {"Authorization": f"Bearer {token}"}
        console = StaffStream(f"http://127.0.0.1:{web_port}", token)
        console.start()
        assert console.ready.wait(30)
        dev.call("press", "split-1")
        wait_for(lambda: "received" in dev.statuses("split-1"), what="received")
        wait_for(
            lambda: any(a["call_id"] == "split-1" for a in console.alerts.values()),
            timeout=30,
            what="the call on the web server's console",
            detail=lambda: calls.logs() + web.log_tail(),
        )
        [alert] = [a for a in console.alerts.values() if a["call_id"] == "split-1"]
        r = web_http.post(f"/api/alerts/{alert['id']}/ack", headers=auth)
        assert r.status_code == 200, r.text
        wait_for(lambda: "acknowledged" in dev.statuses("split-1"), what="acknowledged")
        wait_for(lambda: TEXT in im.messages, timeout=30, what="the page")
        assert im.messages.count(TEXT) == 1  # by the calls server alone
        assert "role=calls" in calls.server.log() and "role=web" in web.log()
        # The web server neither escalates nor takes calls: it sent no status.
        assert "escalat" not in web.log()
        # A room renamed on the web server is the calls server's too.
        r = web_http.patch(
            "/api/admin/rooms/T1-0101", headers=auth, json={"name_en": "Test Bldg 1F East"}
        )
        assert r.status_code == 200, r.text
        wait_for(
            lambda: calls.room("T1-0101")["name_en"] == "Test Bldg 1F East",
            timeout=30,
            what="the rename on the calls server",
            detail=calls.logs,
        )
    finally:
        dev.close()
        web.stop()
        web_http.close()
        calls.stop()
        im.close()
