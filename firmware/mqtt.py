# A small asyncio MQTT 3.1.1 client for the node (docs/firmware.md says why
# not one from PyPI). Persistent session, retained birth and last will,
# keepalive, QoS 1 with PUBACK tracking and DUP retransmission after a
# reconnect, re-subscription on every connect, exponential backoff with
# jitter, optional TLS. Every packet is built whole and written at once on a
# TCP_NODELAY socket: no Nagle stall between header and payload. One
# connection's work (connect, subscribe, read) is in mqtt_session.py.
# No hardware imports: the same code runs on the ESP32 and the unix port.
import asyncio
import random
from asyncio import core
from time import ticks_diff, ticks_ms

from log import log
from mqtt_session import MQTTError, encode_str, packet, session

CONNECT_MS = 10000  # TCP, TLS and CONNACK within this, or try again


def _io(sock, write=False):
    """`await _io(sock)`: until the socket can be read (or written). This is
    what asyncio's own streams do; using it directly spares their memory."""
    q = core._io_queue
    yield q.queue_write(sock) if write else q.queue_read(sock)


class Client:
    """`run()` keeps the connection up for ever; `publish()` raises MQTTError
    while it is down (the caller decides what to keep for later)."""

    def __init__(self, client_id, host, port, user=None, password=None, keepalive=30,
                 will=None, birth=None, subs=(), on_msg=None, on_up=None, ssl=None,
                 cap_ms=30000, max_inflight=16):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will  # (topic, payload, qos, retain)
        self.birth = birth  # (topic, payload): published QoS 1, retained, on every connect
        self.subs = subs
        self.on_msg = on_msg  # function(topic, payload): QoS 1 is acknowledged after it returns
        self.on_up = on_up
        self.ssl = ssl
        self.cap_ms = cap_ms
        self.max_inflight = max_inflight
        self.up = False
        self.connects = 0
        self.inflight = {}  # pid -> [order, packet]: QoS 1 publishes not yet acknowledged
        self.addr = None
        self.sock = None
        self.buf = b""
        self.t_up = self.tx = self.rx = 0
        self._pid = self._order = 0
        self._busy = False

    def next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self.inflight:
                return self._pid

    async def publish(self, topic, payload, qos=1, retain=False):
        """Write the PUBLISH; a QoS 1 one stays in flight (and is sent again,
        DUP, after a reconnect) until its PUBACK. Returns its packet id."""
        while self.up and len(self.inflight) >= self.max_inflight:
            await asyncio.sleep_ms(5)
        if not self.up:
            raise MQTTError("offline")
        return await self.put(topic, payload, qos, retain)

    async def put(self, topic, payload, qos, retain):
        if isinstance(payload, str):
            payload = payload.encode()
        pid = self.next_pid() if qos else 0
        pkt = packet(0x30 | qos << 1 | retain, encode_str(topic) + (
            bytes((pid >> 8, pid & 0xFF)) if qos else b"") + payload)
        if qos:
            self._order += 1
            self.inflight[pid] = [self._order, pkt]
        await self.send(pkt)
        return pid

    async def send(self, pkt):
        while self._busy:  # another task is half-way through a packet
            await asyncio.sleep_ms(2)
        sock = self.sock
        if sock is None:
            raise MQTTError("offline")
        self._busy = True
        try:
            # One write, the whole packet in one TCP segment; more only when
            # the socket's buffer is full.
            while pkt:
                n = sock.write(pkt)
                if n is None:
                    await _io(sock, True)
                else:
                    pkt = pkt[n:]
        finally:
            self._busy = False
        self.tx = ticks_ms()

    async def read(self, n):
        """n bytes from the broker (EOFError when it closed the connection)."""
        buf = self.buf
        while len(buf) < n:
            await _io(self.sock)
            data = self.sock.read(512)
            if data is None:
                continue
            if not data:
                raise EOFError("closed by the broker")
            buf += data
        self.buf = buf[n:]
        return buf[:n]

    async def run(self):
        """Connect, and again after every failure, for ever. Watches the
        connection meanwhile: CONNECT_MS to come up, then keepalive (a
        PINGREQ when quiet for half the period; no answer to it within
        another half and 2 s means the broker is gone)."""
        failures = 0
        half = self.keepalive * 500
        while True:
            self.t_up = 0
            t0 = ticks_ms()
            task = asyncio.create_task(session(self))
            ping = 0
            while not task.done():
                await asyncio.sleep_ms(250)
                now = ticks_ms()
                why = None
                if not self.t_up:
                    if ticks_diff(now, t0) > CONNECT_MS:
                        why = "no answer from the broker"
                elif ping and ticks_diff(self.rx, ping) >= 0:
                    ping = 0
                elif ping:
                    if ticks_diff(now, ping) > half + 2000:
                        why = "no answer to PINGREQ"
                elif ticks_diff(now, self.tx) >= half or ticks_diff(now, self.rx) >= half:
                    ping = now
                    try:
                        await self.send(b"\xc0\x00")
                    except Exception:
                        pass
                if why:
                    log("WARN", "mqtt: %s; connecting again" % why)
                    task.cancel()
                    break
            self.up = False
            if self.t_up and ticks_diff(ticks_ms(), self.t_up) > 10000:
                failures = 0  # it was up a while: start the backoff afresh
            if failures >= 3:
                self.addr = None  # look the name up again
            delay = min(self.cap_ms, 1000 << min(failures, 6))
            failures += 1
            # Jitter: 190 nodes must not all come back in the same second.
            await asyncio.sleep_ms(delay // 2 + random.getrandbits(16) % (delay // 2 + 1))
