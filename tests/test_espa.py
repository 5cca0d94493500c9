"""ESPA 4.4.4 over a real pty pair, against a paging-system simulator written
here, with the expected bytes and BCC written out by hand."""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from mamaroom.config import EspaSettings
from paging.espa import EspaError, EspaLink, page_block
from tests.support import Device, Mosquitto, Services, wait_for

# SOH 1 STX 1 US 100 RS 2 US "CALL SP1-0101 1F" ETX BCC, BCC = 0x76 (XOR of all
# bytes after SOH through ETX, worked out by hand for this exact text).
BLOCK = b"\x011\x021\x1f100\x1e2\x1fCALL SP1-0101 1F\x03\x76"
SELECT = b"\x041\x052\x05"
ACK, NAK, EOT = b"\x06", b"\x15", b"\x04"


class PagingSystem(threading.Thread):
    """The site's paging system on the other end of the line."""

    def __init__(
        self, fd: int, *, naks: int = 0, silent: bool = False, block: bytes | None = BLOCK
    ) -> None:
        # block: the one block it acknowledges (any other gets NAK); None = any.
        super().__init__(daemon=True)
        self.fd, self.naks, self.silent, self.expected = fd, naks, silent, block
        self.received = bytearray()
        self.blocks: list[bytes] = []
        self.stop = threading.Event()

    def read_some(self) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], 0.05)
        return os.read(self.fd, 1024) if ready else b""

    def run(self) -> None:
        buf = bytearray()
        while not self.stop.is_set():
            data = self.read_some()
            self.received += data
            buf += data
            if self.silent:
                buf.clear()
                continue
            if buf.startswith(SELECT):
                del buf[: len(SELECT)]
                os.write(self.fd, ACK)
            elif buf.startswith(b"\x01") and b"\x03" in buf and len(buf) > buf.index(b"\x03") + 1:
                end = buf.index(b"\x03") + 2
                block = bytes(buf[:end])
                del buf[:end]
                self.blocks.append(block)
                if self.naks > 0 or self.expected not in (None, block):  # e.g. a wrong BCC
                    self.naks -= 1
                    os.write(self.fd, NAK)
                else:
                    os.write(self.fd, ACK)
            elif buf.startswith(EOT) and not buf.startswith(SELECT[: len(buf)]):
                del buf[:1]


@pytest.fixture
def line() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    name = os.ttyname(slave)
    yield master, name
    os.close(master)
    os.close(slave)


def run_page(link: EspaLink, pager: str = "100", text: str = "CALL SP1-0101 1F") -> None:
    asyncio.run(link.page(pager, text))


def test_the_block_is_byte_exact() -> None:
    assert page_block("100", "CALL SP1-0101 1F") == BLOCK
    # Chinese text cannot go out on 7-bit ESPA: it is replaced, never sent raw.
    assert page_block("7", "母婴室 SP1").isascii()
    with pytest.raises(ValueError):
        page_block("1x", "text")


def test_a_page_is_selected_sent_acknowledged_and_the_line_released(line: tuple[int, str]) -> None:
    master, name = line
    peer = PagingSystem(master)
    peer.start()
    changes: list[bool] = []
    link = EspaLink(
        EspaSettings(port=name), on_link_change=lambda _subject, up, _: changes.append(up)
    )
    link.start()
    try:
        run_page(link)
        wait_for(
            lambda: bytes(peer.received) == SELECT + BLOCK + EOT,
            timeout=10,
            what="select, block, EOT",
            detail=lambda: bytes(peer.received).hex(),
        )
        assert changes == [True]
    finally:
        peer.stop.set()
        peer.join(5)
        link.stop()


def test_a_nak_makes_it_resend_the_block(line: tuple[int, str]) -> None:
    master, name = line
    peer = PagingSystem(master, naks=1)
    peer.start()
    link = EspaLink(EspaSettings(port=name))
    link.start()
    try:
        run_page(link)
        assert peer.blocks == [BLOCK, BLOCK]
        wait_for(
            lambda: bytes(peer.received).endswith(BLOCK + EOT),
            timeout=10,
            what="EOT after the acknowledged block",
        )
    finally:
        peer.stop.set()
        peer.join(5)
        link.stop()


def test_the_peer_rejects_a_wrong_bcc(line: tuple[int, str]) -> None:
    master, name = line
    peer = PagingSystem(master)  # compares against the hand-written BLOCK
    peer.start()
    link = EspaLink(EspaSettings(port=name, timeout_s=0.5))
    link.start()
    try:
        with pytest.raises(EspaError, match="refused"):
            run_page(link, text="CALL SP1-0101 2F")  # another text, so another BCC
        assert len(peer.blocks) == 3 and all(b != BLOCK for b in peer.blocks)
    finally:
        peer.stop.set()
        peer.join(5)
        link.stop()


def test_silence_marks_the_link_down(line: tuple[int, str]) -> None:
    master, name = line
    peer = PagingSystem(master, silent=True)
    peer.start()
    changes: list[bool] = []
    link = EspaLink(
        EspaSettings(port=name, timeout_s=0.3),
        on_link_change=lambda _subject, up, _: changes.append(up),
    )
    link.start()
    try:
        with pytest.raises(EspaError, match="did not answer the selection 3 times"):
            run_page(link)
        wait_for(
            lambda: bytes(peer.received) == SELECT * 3,
            timeout=10,
            what="three selections on the line",
            detail=lambda: bytes(peer.received).hex(),
        )
        assert changes == [False] and link.up is False
    finally:
        peer.stop.set()
        peer.join(5)
        link.stop()


# The same block for room T1-0101 of the test site; BCC 0x3B worked out by hand.
CALL_BLOCK = b"\x011\x021\x1f100\x1e2\x1fCALL Test Bldg 1F (T1-0101)\x03\x3b"


def test_a_call_pages_over_espa_and_a_dead_link_raises_its_own_alert(
    line: tuple[int, str], broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    master, name = line
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__ESPA__PORT=name,
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "pagers": ["100"]}]',
        MAMAROOM_PAGING__ESPA__TIMEOUT_S="0.5",
    ).start()
    peer = PagingSystem(master, block=CALL_BLOCK)
    peer.start()
    dev = Device(broker.port, "dev-a")
    try:
        dev.call("press", "espa-1")
        wait_for(
            lambda: bytes(peer.received) == SELECT + CALL_BLOCK + EOT,
            timeout=30,
            what="the page on the serial line",
            detail=lambda: bytes(peer.received).hex(),
        )
        [alert] = svc.admin("GET", "/api/alerts").json()
        wait_for(
            lambda: any(
                e["what"] == "paged" and e["channel"] == "espa"
                for e in svc.admin("GET", f"/api/alerts/{alert['id']}").json()["timeline"]
            ),
            what="'paged' in the timeline",
        )
        # The paging system goes silent: the next call still reaches its node
        # at once, and the link raises its own alert.
        peer.silent = True
        svc.admin("POST", f"/api/alerts/{alert['id']}/resolve").raise_for_status()
        dev.call("press", "espa-2")  # a new call (the first is over)
        wait_for(lambda: "received" in dev.statuses("espa-2"), what="received despite ESPA")
        wait_for(
            lambda: svc.admin("GET", "/api/alerts", params={"kind": "paging_link"}).json(),
            timeout=30,
            what="a paging_link alert",
            detail=svc.logs,
        )
    finally:
        dev.close()
        peer.stop.set()
        peer.join(5)
        svc.stop()


def read_exactly(fd: int, n: int, timeout: float = 10) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            out += os.read(fd, n - len(out))
    return out


def test_passive_mode_answers_the_paging_systems_polls(line: tuple[int, str]) -> None:
    master, name = line
    changes: list[bool] = []
    link = EspaLink(
        EspaSettings(port=name, mode="passive", poll_silence_s=1.0),
        on_link_change=lambda _subject, up, _: changes.append(up),
    )
    link.start()
    outcome: list[bool] = []
    try:

        def idle_poll() -> bool:  # the paging system polls address 1 (again and again)
            os.write(master, b"\x041\x05")
            return read_exactly(master, 1, timeout=0.5) == b"\x04"  # idle: EOT

        wait_for(idle_poll, what="EOT to an idle poll")
        link.send("100", "CALL SP1-0101 1F", lambda ok, _: outcome.append(ok))

        def poll() -> bool:  # as the paging system does, until mamaroom has news
            os.write(master, b"\x041\x05")
            return read_exactly(master, 1) == b"2"

        wait_for(poll, what="mamaroom selecting the paging system")
        assert read_exactly(master, 1) == b"\x05"
        os.write(master, ACK)
        assert read_exactly(master, len(BLOCK)) == BLOCK
        os.write(master, ACK)
        assert read_exactly(master, 1) == b"\x04"
        wait_for(lambda: outcome == [True], what="page delivered")
        # The paging system stops polling: the link is reported down.
        wait_for(lambda: changes == [True, False], timeout=10, what="link down on silence")
    finally:
        link.stop()
