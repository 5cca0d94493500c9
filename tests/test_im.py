"""IM paging through apprise, delivered to a real local HTTP endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import Device, Mosquitto, Services, free_port, wait_for


def test_a_call_reaches_an_im_destination(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    port = free_port()
    hook = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{port}/hook"}),
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "im": ["desk"]}]',
    ).start()
    dev = Device(broker.port, "dev-a")
    try:
        dev.call("press", "im-1")
        wait_for(lambda: received, timeout=30, what="the IM message", detail=svc.logs)
        # Chinese for WeCom and DingTalk, the English line after it.
        assert (received[0]["title"], received[0]["message"]) == (
            "mamaroom",
            "紧急呼叫：测试楼1层母婴室（T1-0101）\nCALL Test Bldg 1F (T1-0101)",
        )
        [alert] = svc.admin("GET", "/api/alerts").json()
        wait_for(
            lambda: any(
                e["what"] == "paged" and e["channel"] == "im" and e["who"] == "desk"
                for e in svc.admin("GET", f"/api/alerts/{alert['id']}").json()["timeline"]
            ),
            what="'paged' by im in the timeline",
        )
    finally:
        dev.close()
        svc.stop()
        hook.shutdown()


def test_a_dead_im_service_raises_paging_link_and_blocks_nothing(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    dead = free_port()  # nothing listens here
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{dead}/hook"}),
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "im": ["desk"]}]',
    ).start()
    dev = Device(broker.port, "dev-a")
    try:
        dev.call("press", "im-dead")
        wait_for(lambda: "received" in dev.statuses("im-dead"), what="the node still hears")
        [link] = wait_for(
            lambda: svc.admin("GET", "/api/alerts", params={"kind": "paging_link"}).json(),
            timeout=60,
            what="a paging_link alert",
            detail=svc.logs,
        )
        assert link["subject"] == "im:desk"
    finally:
        dev.close()
        svc.stop()
