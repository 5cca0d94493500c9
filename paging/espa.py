"""Paging over ESPA 4.4.4 on a serial line (RS-232/RS-485), per the contract.

mamaroom is the control station (address `1` by default) of a point-to-point
link to the site's paging system (address `2`). To send a page:

1. EOT, then `1` ENQ `2` ENQ (own address, then select the paging system);
   wait for ACK; no ACK in 2 s: retry; after 3 tries the link is down;
2. the block `SOH 1 STX 1 US <pager> RS 2 US <text> ETX BCC`, BCC being the
   XOR of every byte after SOH up to and including ETX;
3. on ACK send EOT; on NAK or 2 s of silence resend the block (3 tries).

The serial port is blocking I/O, so one worker thread owns it and sends
queued pages one at a time; callers never wait on the line.

The worker never dies of a line fault: an unplugged USB adapter raises
`termios.error` (not an OSError) from pyserial, a dead peer an I/O error.
Every such page is reported failed through its `done` callback, the link is
marked down (a `paging_link` alert), and while it is down the worker probes
the line every `probe_s` so the link comes back up without waiting for the
next call.
"""

from __future__ import annotations

import asyncio
import queue
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import serial

from mamaroom.config import PAGER_NUMBER, EspaSettings, Settings
from mamaroom.logs import get_logger
from paging.channel import Done, LinkChange, Wiring

log = get_logger(__name__)

SOH, STX, ETX, EOT, ENQ, ACK, NAK = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x15"
US, RS = b"\x1f", b"\x1e"
MAX_TEXT = 128


class EspaError(Exception):
    """The paging system did not take the page (link down, or refused)."""


def bcc(data: bytes) -> int:
    """XOR of every byte (the caller passes the bytes after SOH up to and including ETX)."""
    value = 0
    for b in data:
        value ^= b
    return value


def to_7bit(text: str) -> str:
    """Classic ESPA text is 7-bit ASCII: drop accents, replace what is left."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in plain)
    return cleaned[:MAX_TEXT]


def page_block(pager: str, text: str) -> bytes:
    """`SOH 1 STX 1 US <pager> RS 2 US <text> ETX BCC` (header 1 = call to pager)."""
    if not pager.isascii() or not pager.isdigit():
        raise ValueError(f"pager number must be digits, got {pager!r}")
    body = b"1" + STX + b"1" + US + pager.encode() + RS + b"2" + US + to_7bit(text).encode() + ETX
    return SOH + body + bytes([bcc(body)])


@dataclass(frozen=True)
class Page:
    pager: str
    text: str
    done: Callable[[bool, str], None] | None = None


def from_settings(settings: Settings, wiring: Wiring) -> EspaLink | None:
    """The ESPA link `paging.espa` configures (None without a port)."""
    if not settings.paging.espa.port:
        return None
    return EspaLink(settings.paging.espa, wiring.on_link_change)


class EspaLink:
    """One serial link, one worker thread; `send()` queues a page and returns."""

    name = "espa"
    ascii_only = True

    def __init__(self, settings: EspaSettings, on_link_change: LinkChange | None = None) -> None:
        """`on_link_change("espa", up, detail)`: one serial line, one state."""
        self.settings = settings
        self._on_link_change = on_link_change
        self._pages: queue.Queue[Page | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._port: serial.Serial | None = None
        self.up: bool | None = None  # unknown until the first page

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="espa", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._pages.put(None)
        if self._thread:
            self._thread.join(timeout=10)
        self._close_port()

    def reaches(self, target: str) -> bool:
        return bool(re.fullmatch(PAGER_NUMBER, target))

    def send(self, pager: str, text: str, done: Done | None = None) -> None:
        self._pages.put(Page(pager, text, done))

    async def page(self, pager: str, text: str) -> None:
        """Queue a page and wait for the outcome (raises EspaError)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[tuple[bool, str]] = loop.create_future()

        def settle(ok: bool, detail: str) -> None:  # noqa: FBT001 (paging.channel.Done's (ok, detail))
            if not result.done():
                result.set_result((ok, detail))

        def done(ok: bool, detail: str) -> None:  # noqa: FBT001 (paging.channel.Done; worker thread)
            loop.call_soon_threadsafe(settle, ok, detail)

        self.send(pager, text, done)
        ok, detail = await result
        if not ok:
            raise EspaError(detail)

    # --- the worker thread ----------------------------------------------------------

    def _open(self) -> serial.Serial:
        if self._port is None or not self._port.is_open:
            s = self.settings
            self._port = serial.Serial(
                s.port,
                baudrate=s.baud,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=0.1,
                write_timeout=s.timeout_s,
            )
        return self._port

    def _run(self) -> None:
        # A bug or an unexpected exception type must never end paging for
        # good: the loop is restarted, and the page in hand is reported failed.
        while True:
            try:
                if self.settings.mode == "passive":
                    self._run_passive()
                else:
                    self._run_control()
                return  # stop()
            except Exception as exc:  # the worker must survive anything
                log.exception("ESPA worker failed; restarting it", port=self.settings.port)
                self._link(up=False, detail=f"worker failed: {type(exc).__name__}: {exc}")
                self._close_port()
                time.sleep(min(self.settings.timeout_s, 1.0))

    def _run_control(self) -> None:
        while True:
            try:
                page = self._pages.get(timeout=self.settings.probe_s if self.up is False else None)
            except queue.Empty:
                self._probe()
                continue
            if page is None:
                return
            try:
                self._transmit(page)
            except Exception as exc:  # termios.error is no OSError
                detail = (
                    f"{type(exc).__name__}: {exc}" if not isinstance(exc, EspaError) else str(exc)
                )
                log.error(
                    "ESPA page failed", pager=page.pager, error=detail, port=self.settings.port
                )
                self._link(up=False, detail=detail)
                if not isinstance(exc, EspaError):
                    self._close_port()  # reopen on the next page
                self._settle(page, ok=False, detail=detail)
                continue
            self._link(up=True, detail="page delivered")
            self._settle(page, ok=True, detail="delivered")

    def _settle(self, page: Page, *, ok: bool, detail: str) -> None:
        if page.done is None:
            return
        try:
            page.done(ok, detail)
        except Exception:  # a caller's bug must not stop paging
            log.exception("ESPA page outcome callback failed")

    def _probe(self) -> None:
        """The link is down: select the paging system (and release the line);
        an ACK means it is back."""
        s = self.settings
        try:
            port = self._open()
            port.reset_input_buffer()
            port.write(EOT + s.own_address.encode() + ENQ + s.pager_system_address.encode() + ENQ)
            if self._read_reply(port) == ACK:
                port.write(EOT)
                self._link(up=True, detail="paging system answers again")
        except Exception as exc:
            log.debug("ESPA probe failed", error=f"{type(exc).__name__}: {exc}")
            self._close_port()

    def _close_port(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except Exception:  # closing a dead port may fail too
                pass
            self._port = None

    def _link(self, *, up: bool, detail: str) -> None:
        if up != self.up:
            self.up = up
            log.log(
                20 if up else 40,
                "ESPA link " + ("up" if up else "down"),
                port=self.settings.port,
                detail=detail,
            )
            if self._on_link_change:
                try:
                    self._on_link_change(self.name, up, detail)
                except Exception:
                    log.exception("ESPA link-change callback failed")

    def _transmit(self, page: Page) -> None:
        port = self._open()
        s = self.settings
        port.reset_input_buffer()
        selection = EOT + s.own_address.encode() + ENQ + s.pager_system_address.encode() + ENQ
        for attempt in range(1, s.tries + 1):
            port.write(selection)
            reply = self._read_reply(port)
            if reply == ACK:
                break
            log.warning("ESPA selection not acknowledged", attempt=attempt, reply=reply.hex())
        else:
            raise EspaError(f"paging system did not answer the selection {s.tries} times")
        self._send_block(port, page)

    def _send_block(self, port: serial.Serial, page: Page) -> None:
        """The block, resent on NAK or silence, then EOT to release the line."""
        s = self.settings
        block = page_block(page.pager, page.text)
        for attempt in range(1, s.tries + 1):
            port.write(block)
            reply = self._read_reply(port)
            if reply == ACK:
                port.write(EOT)  # hand the line back
                return
            log.warning(
                "ESPA block not acknowledged; resending",
                attempt=attempt,
                reply=reply.hex() or "silence",
            )
        port.write(EOT)
        raise EspaError(f"paging system refused or ignored the block {s.tries} times")

    # --- passive mode: the paging system is the control station ------------------

    def _run_passive(self) -> None:  # noqa: C901 (the ESPA 4.4.4 passive-side state machine)
        """Answer the paging system's polls: EOT when idle; when a page waits,
        select the paging system (`2` ENQ), and on its ACK send the block."""
        s = self.settings
        poll = EOT + s.own_address.encode() + ENQ
        buf = bytearray()
        pending: Page | None = None
        last_poll = time.monotonic()
        while True:
            if pending is None:
                try:
                    pending = self._pages.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if pending is None:
                        return  # stop()
            try:
                port = self._open()
                buf += port.read(64)
            except Exception as exc:  # termios.error is no OSError
                self._link(up=False, detail=f"{type(exc).__name__}: {exc}")
                self._close_port()
                time.sleep(s.timeout_s)
                continue
            at = buf.find(poll)
            if at < 0:
                del buf[: -len(poll)]  # keep a possible partial poll
                if time.monotonic() - last_poll > s.poll_silence_s:
                    self._link(
                        up=False, detail=f"no poll from the paging system in {s.poll_silence_s:g} s"
                    )
                continue
            del buf[: at + len(poll)]
            last_poll = time.monotonic()
            self._link(up=True, detail="polled")
            if pending is None:
                port.write(EOT)  # nothing to send
                continue
            port.write(s.pager_system_address.encode() + ENQ)
            if self._read_reply(port) != ACK:
                continue  # try again at the next poll
            try:
                self._send_block(port, pending)
            except Exception as exc:
                log.error("ESPA page failed", pager=pending.pager, error=str(exc))
                self._settle(pending, ok=False, detail=f"{type(exc).__name__}: {exc}")
                if not isinstance(exc, EspaError):
                    self._close_port()
            else:
                self._settle(pending, ok=True, detail="delivered")
            pending = None

    def _read_reply(self, port: serial.Serial) -> bytes:
        """The next ACK or NAK within the timeout; b"" on silence."""
        deadline = time.monotonic() + self.settings.timeout_s
        while time.monotonic() < deadline:
            b = port.read(1)
            if b in (ACK, NAK):
                return bytes(b)
        return b""
