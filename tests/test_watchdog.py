"""The dead-man's switch: its decisions on an injected clock, then the real
thing: gateway, server and broker killed and restarted in turn, the watchdog
paging a real pty ESPA peer and a local HTTP endpoint through apprise."""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import tty
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mamaroom.config import Settings, WatchdogSettings
from paging.espa import bcc
from tests.support import Mosquitto, Proc, Services, free_port, wait_for
from watchdog.service import BROKER, SERVER, Watchdog

SOH, STX, ETX, EOT, ENQ, ACK, NAK = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x15"
US, RS = b"\x1f", b"\x1e"
SELECT = EOT + b"1" + ENQ + b"2" + ENQ


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_decisions_on_a_clock() -> None:
    clock, pages = Clock(), list[str]()
    settings = Settings(
        watchdog=WatchdogSettings(
            gateway_silence_s=60, server_silence_s=30, broker_silence_s=30, repeat_s=300
        )
    )
    wd = Watchdog(settings, send=pages.append, clock=clock)
    gw = "gateway mamaroom-gateway"
    clock.now += 29
    for name in (BROKER, SERVER, gw):
        wd.alive(name)
    wd.evaluate()
    assert pages == []  # nothing silent for long enough
    clock.now += 31
    wd.alive(BROKER)
    wd.evaluate()
    assert pages == [
        "MAMAROOM DOWN: server not answering or not ready: calls are not paged (silent for 31 s)"
    ]
    wd.dead(gw, "its last will: offline")
    wd.dead(gw, "its last will: offline")  # told twice, paged once
    assert len(pages) == 2 and pages[1].startswith("MAMAROOM DOWN: gateway mamaroom-gateway")
    clock.now += 300
    wd.alive(BROKER)
    wd.evaluate()  # still down after repeat_s: paged again, each
    assert sorted(p.split(":")[0] for p in pages[2:]) == ["MAMAROOM STILL DOWN"] * 2
    wd.alive(SERVER)
    wd.alive(gw)
    assert pages[-2:] == ["MAMAROOM RESTORED: server", f"MAMAROOM RESTORED: {gw}"]
    # The broker goes away: one page for it, none for the gateway whose
    # heartbeats cannot arrive meanwhile, however long it lasts.
    del pages[:]
    clock.now += 31
    wd.alive(SERVER)
    wd.evaluate()
    clock.now += 1000
    wd.alive(SERVER)
    wd.evaluate()
    assert [p.split(" (")[0] for p in pages] == [
        "MAMAROOM DOWN: MQTT broker not answering: no call can arrive",
        "MAMAROOM STILL DOWN: MQTT broker not answering: no call can arrive",
    ]
    wd.server_answered(ready=False, live=True)  # waiting to reconnect: not its fault
    wd.alive(BROKER)
    assert pages[-1] == "MAMAROOM RESTORED: broker"
    clock.now += 59  # the gateway gets a full silence period after the broker is back
    wd.alive(BROKER)
    wd.alive(SERVER)
    wd.evaluate()
    assert pages[-1] == "MAMAROOM RESTORED: broker"
    clock.now += 2  # ... and no more
    wd.server_answered(ready=True, live=True)
    wd.evaluate()
    assert pages[-1].startswith("MAMAROOM DOWN: gateway mamaroom-gateway stopped")
    # A server that runs but is not ready (say its broker login stopped
    # working) while the broker is fine: paged like a dead one.
    del pages[:]
    wd.alive(gw)
    for _ in range(31):
        clock.now += 1
        wd.alive(BROKER)
        wd.server_answered(ready=False, live=True)
        wd.evaluate()
    assert pages[-1] == (
        "MAMAROOM DOWN: server not answering or not ready: calls are not paged (silent for 31 s)"
    )


class Desk(threading.Thread):
    """The paging system on the watchdog's serial line: ACKs the selection
    and every block whose BCC is right, and keeps the texts."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.pages: list[tuple[str, str]] = []  # (pager, text)
        self.stop = threading.Event()

    def run(self) -> None:
        buf = bytearray()
        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                buf += os.read(self.fd, 1024)
            while buf:
                if buf.startswith(SELECT):
                    del buf[: len(SELECT)]
                    os.write(self.fd, ACK)
                elif buf.startswith(SOH):
                    end = buf.find(ETX)
                    if end < 0 or len(buf) < end + 2:
                        break  # wait for the rest
                    block = bytes(buf[: end + 2])
                    del buf[: end + 2]
                    if bcc(block[1:-1]) != block[-1]:
                        os.write(self.fd, NAK)
                        continue
                    pager = block[block.index(US) + 1 : block.index(RS)].decode()
                    text = block[block.index(RS) + 3 : -2].decode()
                    self.pages.append((pager, text))
                    os.write(self.fd, ACK)
                elif SELECT.startswith(bytes(buf)):
                    break  # a selection still arriving
                else:
                    del buf[:1]  # EOT releasing the line, or noise

    def texts(self) -> list[str]:
        return [text for _, text in self.pages]


@pytest.fixture
def desk_line() -> Iterator[tuple[Desk, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    desk = Desk(master)
    desk.start()
    yield desk, os.ttyname(slave)
    desk.stop.set()
    desk.join(5)
    os.close(master)
    os.close(slave)


@pytest.fixture
def im_hook() -> Iterator[tuple[list[str], int]]:
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body["message"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    port = free_port()
    hook = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    yield received, port
    hook.shutdown()


def test_kills_and_restarts_are_paged_over_espa_and_im(
    broker: Mosquitto,
    tmp_path: Path,
    rooms_csv: Path,
    desk_line: tuple[Desk, str],
    im_hook: tuple[list[str], int],
) -> None:
    desk, tty_name = desk_line
    im, im_port = im_hook
    svc = Services(broker, tmp_path, rooms_csv).start()
    watchdog = Proc(
        "watchdog",
        ["watchdog"],
        {
            **svc.env,
            "MAMAROOM_WATCHDOG__CHECK_S": "0.5",
            "MAMAROOM_WATCHDOG__GATEWAY_SILENCE_S": "15",
            "MAMAROOM_WATCHDOG__SERVER_SILENCE_S": "2",
            "MAMAROOM_WATCHDOG__BROKER_SILENCE_S": "2",
            "MAMAROOM_WATCHDOG__REPEAT_S": "0",
            "MAMAROOM_WATCHDOG__PAGERS": '["900"]',
            "MAMAROOM_WATCHDOG__ESPA_PORT": tty_name,
            "MAMAROOM_WATCHDOG__IM": '["desk"]',
            "MAMAROOM_PAGING__IM__DESTINATIONS": json.dumps(
                {"desk": f"json://127.0.0.1:{im_port}/hook"}
            ),
        },
        tmp_path,
    ).start()
    expected: list[str] = []

    def paged(text: str) -> None:
        """`text` (a prefix) is the next page, on both channels."""
        expected.append(text)

        def both() -> bool:
            got = [
                [t[: len(e)] for t, e in zip(ch, expected, strict=False)]
                for ch in (im, desk.texts())
            ]
            return got == [expected, expected]

        wait_for(
            both,
            timeout=60,
            what=f"page {text!r}",
            detail=lambda: f"IM {im}\nESPA {desk.pages}\n{watchdog.log_tail()}",
        )

    try:
        for check in ("broker", "server", "'gateway mamaroom-gateway'"):
            wait_for(
                lambda: f"check={check}" in watchdog.log(),  # noqa: B023 (polled before the loop moves on)
                timeout=30,
                what=f"the watchdog seeing {check} alive",
                detail=watchdog.log_tail,
            )
        svc.gateway.kill()  # its last will tells at once
        paged(
            "MAMAROOM DOWN: gateway mamaroom-gateway stopped: room states stale "
            "(status offline: stopped, or its last will)"
        )
        svc.start_gateway()
        paged("MAMAROOM RESTORED: gateway mamaroom-gateway")
        assert svc.gateway.proc is not None
        svc.gateway.proc.send_signal(signal.SIGSTOP)  # hung: socket open, no heartbeat
        paged("MAMAROOM DOWN: gateway mamaroom-gateway stopped: room states stale (silent for")
        svc.gateway.proc.send_signal(signal.SIGCONT)
        paged("MAMAROOM RESTORED: gateway mamaroom-gateway")
        svc.server.kill()
        paged("MAMAROOM DOWN: server not answering or not ready: calls are not paged (silent for")
        svc.server.start()
        paged("MAMAROOM RESTORED: server")
        broker.stop(signal.SIGKILL)
        paged("MAMAROOM DOWN: MQTT broker not answering: no call can arrive (silent for")
        broker.start()
        paged("MAMAROOM RESTORED: broker")
        assert all(pager == "900" for pager, _ in desk.pages)
        assert len(im) == len(desk.pages) == len(expected)
    finally:
        watchdog.stop()
        svc.stop()


def test_a_cleanly_stopped_gateway_is_paged_at_once_not_after_its_silence(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, im_hook: tuple[list[str], int]
) -> None:
    # A clean DISCONNECT makes the broker discard the gateway's last will; the
    # gateway must announce itself, or the watchdog waits out gateway_silence_s.
    im, im_port = im_hook
    svc = Services(broker, tmp_path, rooms_csv).start()
    watchdog = Proc(
        "watchdog",
        ["watchdog"],
        {
            **svc.env,
            "MAMAROOM_WATCHDOG__CHECK_S": "0.5",
            "MAMAROOM_WATCHDOG__GATEWAY_SILENCE_S": "300",  # far beyond the wait below
            "MAMAROOM_WATCHDOG__REPEAT_S": "0",
            "MAMAROOM_WATCHDOG__IM": '["desk"]',
            "MAMAROOM_PAGING__IM__DESTINATIONS": json.dumps(
                {"desk": f"json://127.0.0.1:{im_port}/hook"}
            ),
        },
        tmp_path,
    ).start()
    try:
        wait_for(
            lambda: "check='gateway mamaroom-gateway'" in watchdog.log(),
            timeout=30,
            what="the watchdog seeing the gateway alive",
            detail=watchdog.log_tail,
        )
        assert svc.gateway.stop() == 0  # SIGTERM: a clean stop
        wait_for(
            lambda: any(
                t.startswith("MAMAROOM DOWN: gateway mamaroom-gateway stopped") for t in im
            ),
            timeout=30,
            what="the gateway paged down",
            detail=lambda: f"IM {im}\n{watchdog.log_tail()}",
        )
        svc.start_gateway()
        wait_for(
            lambda: "MAMAROOM RESTORED: gateway mamaroom-gateway" in im,
            timeout=30,
            what="the gateway paged back",
            detail=lambda: f"IM {im}",
        )
    finally:
        watchdog.stop()
        svc.stop()
