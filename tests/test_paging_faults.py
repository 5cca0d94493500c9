"""Faults of the paging path, injected into a real server process: the ESPA
adapter unplugged mid-run (the pty's master closed: the server's next write
gets an I/O error, as from a USB adapter pulled out) and plugged back in.

Measured on main before this test existed: the ESPA worker thread died of
`termios.error` (no OSError), every later page was lost without a trace, no
`paging_link` alert, and the console still said "paged"."""

from __future__ import annotations

import json
import os
import threading
import time
import tty
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import Device, Mosquitto, Services, free_port, record_fault, wait_for
from tests.test_espa import PagingSystem

#: The page as IM shows it: Chinese, then English (ESPA gets the English line).
CALL_TEXT = "紧急呼叫：测试楼1层母婴室（T1-0101）\nCALL Test Bldg 1F (T1-0101)"


class ImHook:
    """A local HTTP endpoint standing in for WeCom/DingTalk (apprise json://)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.messages.append(json.loads(body)["message"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Adapter:
    """A USB-serial adapter at a fixed path (a symlink, as udev makes one):
    plugged in, it is a pty with the paging system on the far end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = self.slave = -1
        self.peer: PagingSystem | None = None

    def plug(self, block: bytes) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.path)
        self.peer = PagingSystem(self.master, block=block)
        self.peer.start()

    def unplug(self) -> None:
        assert self.peer is not None
        self.peer.stop.set()
        self.peer.join(5)
        os.close(self.master)
        os.close(self.slave)

    def pages(self) -> list[bytes]:
        return list(self.peer.blocks) if self.peer else []


def test_an_unplugged_espa_adapter_is_an_alert_paged_over_im_and_recovers(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    from tests.test_espa import CALL_BLOCK

    adapter = Adapter(tmp_path / "ttyESPA")
    adapter.plug(CALL_BLOCK)
    im = ImHook()
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__ESPA__PORT=str(adapter.path),
        MAMAROOM_PAGING__ESPA__TIMEOUT_S="0.5",
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{im.port}/hook"}),
        MAMAROOM_ESCALATION__TIERS=json.dumps([{"after_s": 0, "pagers": ["100"], "im": ["desk"]}]),
    ).start()
    dev = Device(broker.port, "dev-a")

    def alert_of(call_id: str) -> dict[str, Any]:
        for a in svc.admin("GET", "/api/alerts", params={"kind": "call"}).json():
            if a["call_id"] == call_id:
                return dict(a)
        raise KeyError(call_id)

    try:
        dev.call("press", "before")
        wait_for(
            lambda: adapter.pages() and CALL_TEXT in im.messages,
            timeout=30,
            what="the first call paged over ESPA and IM",
            detail=svc.logs,
        )
        wait_for(
            lambda: alert_of("before")["paging"].get("100", {}).get("ok"),
            what="'100 ok' on the first alert",
        )

        # Each call ends before the next (a press in a room with an open call joins it).
        svc.admin("POST", f"/api/alerts/{alert_of('before')['id']}/resolve").raise_for_status()
        adapter.unplug()
        unplugged = time.monotonic()
        dev.call("press", "during")
        wait_for(lambda: "received" in dev.statuses("during"), what="the node hears received")
        failed = wait_for(
            lambda: (
                a if (a := alert_of("during"))["paging"].get("100", {}).get("ok") is False else None
            ),
            timeout=30,
            what="'page to 100 failed' on the alert",
            detail=svc.logs,
        )
        assert failed["paging"]["desk"]["ok"] is True  # IM still reached the desk
        [link] = wait_for(
            lambda: svc.admin("GET", "/api/alerts", params={"kind": "paging_link"}).json(),
            timeout=30,
            what="a paging_link alert",
            detail=svc.logs,
        )
        assert link["subject"] == "espa" and link["status"] == "open"
        # The fault itself is paged, over the channel that still works.
        wait_for(
            lambda: any(
                m.startswith("寻呼故障：espa") and "PAGING FAULT espa" in m for m in im.messages
            ),
            timeout=30,
            what="the paging fault paged over IM",
            detail=svc.logs,
        )
        timeline = svc.admin("GET", f"/api/alerts/{failed['id']}").json()["timeline"]
        assert any(e["what"] == "page failed" and e["who"] == "100" for e in timeline)

        adapter.plug(CALL_BLOCK)  # plugged back in (a new tty behind the same path)
        wait_for(
            lambda: svc.admin("GET", f"/api/alerts/{link['id']}").json()["status"] == "resolved",
            timeout=60,
            what="the paging_link alert cleared by itself",
            detail=svc.logs,
        )
        recovered_s = time.monotonic() - unplugged
        svc.admin("POST", f"/api/alerts/{failed['id']}/resolve").raise_for_status()
        dev.call("press", "after")
        wait_for(lambda: adapter.pages(), timeout=30, what="ESPA pages again", detail=svc.logs)
        wait_for(
            lambda: alert_of("after")["paging"].get("100", {}).get("ok"),
            what="'100 ok' after the replug",
        )
        # Every call was acknowledged to its node: nothing lost.
        for call_id in ("before", "during", "after"):
            assert "received" in dev.statuses(call_id)
        record_fault(
            "ESPA adapter unplugged (pty master closed), plugged back",
            f"calls lost 0 of 3; each failed page on its alert; `paging_link` alert "
            f"paged over IM; link up again and alert cleared {recovered_s:.1f} s "
            "after the unplug (replug included; a down link is probed every 10 s)",
        )
    finally:
        dev.close()
        svc.stop()
        im.close()
