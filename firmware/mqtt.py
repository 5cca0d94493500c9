# A small asyncio MQTT 3.1.1 client for the node (docs/firmware.md says why
# not one from PyPI). Persistent session, retained birth and last will,
# keepalive, QoS 1 with PUBACK tracking and DUP retransmission after a
# reconnect, re-subscription on every connect, exponential backoff with
# jitter, optional TLS. Every packet is built whole and written at once on a
# TCP_NODELAY socket: no Nagle stall between header and payload.
# No hardware imports: the same code runs on the ESP32 and the unix port.
import asyncio
import io
import json
import random
import socket
from asyncio import core  # type: ignore[attr-defined]  # MicroPython's own

from log import exc, log
from ticks import ticks_diff, ticks_ms

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

CONNECT_MS = 10000  # TCP, TLS and CONNACK within this, or try again
SEND_MS = 10000  # a packet not written within this: the connection is given up
URGENT_MS = 3000  # the reconnect backoff's cap while a call is open (Client.urgent)
NODELAY = (6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY, on: raw numbers, as not every port names them
# A command is a few hundred bytes; a bigger message is read away, never held
# (the contract's 4 KiB would not fit the heap of a busy node in one piece).
MAX_PAYLOAD = 1024
BUF = 640  # the one buffer the node's biggest messages (telemetry, ~500 bytes) are built in


class MQTTError(Exception):
    pass


def encode_str(s):
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def packet(kind, *parts):
    """A whole packet, built in one buffer (one allocation: the heap is small
    and a busy node's worst enemy is fragmentation): fixed header, remaining
    length, then the parts (bytes) one after the other."""
    n = 0
    for p in parts:
        n += len(p)
    head = bytearray((kind,))
    r = n
    while True:
        b = r & 0x7F
        r >>= 7
        head.append(b | 0x80 if r else b)
        if not r:
            break
    i = len(head)
    pkt = bytearray(i + n)
    pkt[:i] = head
    for p in parts:
        pkt[i : i + len(p)] = p
        i += len(p)
    return pkt


# One connection: CONNECT (clean session off, will, keepalive, user,
# password) and its CONNACK; the subscriptions again; the unacknowledged
# QoS 1 publishes again (DUP); the retained birth; then the broker's packets
# as they come (PUBACK, SUBACK, PINGRESP; a PUBLISH is handled, then
# acknowledged). One coroutine: on a small heap every frame counts.
async def session(c):
    """One connection of client `c`, until it fails; Client.run watches it
    (connect timeout, keepalive) and cancels it when it hangs."""
    sock = None
    try:
        if c.addr is None:
            # config.json gives an IP address (config.py): no DNS look-up, no blocking.
            c.addr = socket.getaddrinfo(c.host, c.port, 0, socket.SOCK_STREAM)[0]
        ai = c.addr
        sock = socket.socket(ai[0], ai[1], ai[2])
        try:
            sock.setsockopt(*NODELAY)
        except (OSError, TypeError):
            pass
        sock.setblocking(False)
        try:
            sock.connect(ai[-1])
        except OSError as e:
            if e.errno not in (115, 119):  # EINPROGRESS (Linux, lwIP)
                raise
        if c.ssl:
            sock = c.ssl.wrap_socket(sock, server_hostname=c.host, do_handshake_on_connect=False)
            sock.setblocking(False)
        c.sock = sock
        c.buf = b""
        flags = 0
        tail = encode_str(c.client_id)
        if c.will:
            topic, msg, qos, retain = c.will
            flags = 4 | qos << 3 | retain << 5
            tail += encode_str(topic) + encode_str(msg)
        if c.user:
            flags |= 0x80
            tail += encode_str(c.user)
            if c.password:
                flags |= 0x40
                tail += encode_str(c.password)
        await c.send(
            packet(
                0x10,
                b"\x00\x04MQTT\x04",
                bytes((flags, c.keepalive >> 8, c.keepalive & 0xFF)),
                tail,
            )
        )
        tail = None
        ack = await c.read(4)
        if ack[0] != 0x20 or ack[3]:
            raise MQTTError("refused: CONNACK %d" % ack[3])
        c.t_up = c.rx = ticks_ms()
        for topic in c.subs:  # always: the broker may have lost the session
            pid = c.next_pid()
            await c.send(packet(0x82, bytes((pid >> 8, pid & 0xFF)), encode_str(topic), b"\x01"))
        for k in [k for k, v in c.inflight.items() if v[1] is None]:
            del c.inflight[k]  # not kept (publish_json): its sender sends afresh
        for pkt in sorted(c.inflight.values()):  # [order, packet]: oldest first
            pkt = pkt[1]
            pkt[0] |= 8  # DUP: a retransmission
            await c.send(pkt)
        if c.birth:
            await c.put(c.birth[0], c.birth[1], 1, True)
        c.up = True
        c.connects += 1
        log(
            "INFO",
            "mqtt: online at %s:%d (session %s)"
            % (c.host, c.port, "resumed" if ack[2] & 1 else "new"),
        )
        if c.on_up:
            c.on_up(c.ctx)
        while True:
            b = await c.read(2)  # every packet: its type, and its length's first byte
            head = b[0]
            b = b[1]
            n = shift = 0
            while True:
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 21:
                    raise MQTTError("bad packet length")
                b = (await c.read(1))[0]
            c.rx = ticks_ms()
            kind = head & 0xF0
            if kind != 0x30:
                body = await c.read(n) if n else b""
                if kind == 0x40:  # PUBACK
                    pid = body[0] << 8 | body[1]
                    c.inflight.pop(pid, None)
                    if pid == c.watch:
                        c.watched = True
                elif kind == 0x90 and body[-1:] == b"\x80":
                    log("ERROR", "mqtt: subscription refused (ACL?)")
                continue
            # PUBLISH: topic, packet id (QoS 1), payload
            b = await c.read(2)
            topic = await c.read(b[0] << 8 | b[1])
            n -= 2 + len(topic)
            pid = 0
            if head & 6:
                b = await c.read(2)
                pid = b[0] << 8 | b[1]
                n -= 2
            if n > MAX_PAYLOAD:
                # Never hold an oversize message in the heap: read it away in pieces.
                while n > 0:
                    n -= len(await c.read(min(n, 256)))
                log("WARN", "mqtt: oversize message dropped")
            else:
                payload = await c.read(n) if n > 0 else b""
                try:
                    if c.on_msg:
                        c.on_msg(c.ctx, topic, payload)
                except Exception as e:  # a bad message never takes the connection down
                    exc("mqtt: message handler", e)
                payload = None
            if head & 6:  # QoS 1: acknowledged after it was handled
                await c.send(bytes((0x40, 2, pid >> 8, pid & 0xFF)))
    except asyncio.CancelledError:
        raise
    except Exception as e:  # broker away, refused, reset: Client.run tries again
        exc("mqtt: %s:%d" % (c.host, c.port), e)
    finally:
        c.up = False
        c.sock = None
        c._busy = False  # a send cancelled half-way must not block the next connection's
        if sock:
            sock.close()


def _io(sock, write=False):
    """`await _io(sock)`: until the socket can be read (or written). This is
    what asyncio's own streams do; using it directly spares their memory."""
    q = core._io_queue
    yield q.queue_write(sock) if write else q.queue_read(sock)


class _Buf(io.IOBase):
    """json.dump's stream: bytes written on into a bytearray kept for good."""

    def __init__(self, n):
        self.b = bytearray(n)
        self.n = 0

    def write(self, d):
        n = self.n
        k = len(d)
        self.b[n : n + k] = d  # (grows the buffer if a message is ever longer)
        self.n = n + k
        return k


class Client:
    """`run()` keeps the connection up for ever; `publish()` raises MQTTError
    while it is down (the caller decides what to keep for later)."""

    def __init__(
        self,
        client_id,
        host,
        port,
        user=None,
        password=None,
        keepalive=30,
        will=None,
        birth=None,
        subs=(),
        on_msg=None,
        on_up=None,
        ssl=None,
        cap_ms=30000,
        max_inflight=4,
    ):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will  # (topic, payload, qos, retain)
        self.birth = birth  # (topic, payload): published QoS 1, retained, on every connect
        self.subs = subs
        # on_msg(ctx, topic, payload): a QoS 1 message is acknowledged after it
        # returns; on_up(ctx): connected (again). ctx: what the caller wants
        # handed back (a closure per callback would cost the heap more).
        self.on_msg = on_msg
        self.on_up = on_up
        self.ctx = None
        self.ssl = ssl
        self.cap_ms = cap_ms
        self.max_inflight = max_inflight
        self.up = False
        self.connects = 0
        self.inflight = {}  # pid -> [order, packet]: QoS 1 publishes not yet acknowledged
        self.addr = None
        self.sock: Any = None  # the session's socket (None: no connection)
        self.buf = b""
        self._rb = bytearray(128)
        # ticks of: the connection up (None: not up), the latest packet out, in
        self.t_up: Any = None
        self.tx: Any = 0
        self.rx: Any = 0
        self._pid = self._order = 0
        self._busy = False
        self._task: Any = None  # the session under way
        # A packet id whose PUBACK is watched for (trial.py: telemetry of an
        # update on trial), and whether it came. Out of flight is not enough:
        # a reconnect drops what is not kept (publish_json) unacknowledged.
        self.watch: Any = None
        self.watched = False
        self.dead = False  # a send timed out: Client.run gives the connection up
        # Set by the node: a call is open (backoff capped at URGENT_MS); the
        # link came back (retry now, backoff afresh); the supervisor (beats).
        self.urgent = False
        self.kick = False
        self.sup: Any = None
        # Made at boot, while the heap is whole: a fresh ~500-byte block per
        # telemetry message is what a fragmented heap stops having.
        self._out = _Buf(BUF)

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

    async def publish_json(self, topic, obj, keep=True):
        """`obj` as JSON, QoS 1. keep=False: written straight into the
        client's one buffer (no block of the heap of its own) and not sent
        again after a reconnect (the caller sends its state afresh then);
        in flight until its PUBACK all the same. One caller at a time."""
        if keep:
            return await self.publish(topic, json.dumps(obj))
        while self.up and len(self.inflight) >= self.max_inflight:
            await asyncio.sleep_ms(5)
        if not self.up:
            raise MQTTError("offline")
        o = self._out
        t = encode_str(topic)
        head = 5 + len(t) + 2  # room for the longest fixed header, then topic and packet id
        o.n = head
        json.dump(obj, o)
        b = o.b
        n = o.n - head + len(t) + 2  # the remaining length
        i = head - len(t) - 2
        pid = self.next_pid()
        b[i : i + len(t)] = t
        b[head - 2] = pid >> 8
        b[head - 1] = pid & 0xFF
        r = bytearray()
        while True:  # the remaining length, as packet() writes it
            d = n & 0x7F
            n >>= 7
            r.append(d | 0x80 if n else d)
            if not n:
                break
        i -= len(r) + 1  # right before the topic: type, then the remaining length
        b[i] = 0x32  # PUBLISH, QoS 1
        b[i + 1 : i + 1 + len(r)] = r
        self._order += 1
        self.inflight[pid] = [self._order, None]  # None: not sent again
        await self.send(memoryview(b)[i : o.n])
        return pid

    async def put(self, topic, payload, qos, retain):
        if isinstance(payload, str):
            payload = payload.encode()
        pid = self.next_pid() if qos else 0
        pkt = packet(
            0x30 | qos << 1 | retain,
            encode_str(topic),
            bytes((pid >> 8, pid & 0xFF)) if qos else b"",
            payload,
        )
        if qos:
            self._order += 1
            self.inflight[pid] = [self._order, pkt]
        await self.send(pkt)
        return pid

    async def send(self, pkt):
        t0 = ticks_ms()
        while self._busy:  # another task is half-way through a packet
            if ticks_diff(ticks_ms(), t0) > SEND_MS:
                raise MQTTError("send: the socket busy for %d s" % (SEND_MS // 1000))
            await asyncio.sleep_ms(2)
        sock = self.sock
        if sock is None:
            raise MQTTError("offline")
        self._busy = sock  # held for this socket (a session's end frees it: session())
        try:
            # One write, the whole packet in one TCP segment; more only when
            # the socket's buffer is full. Then polled, not queued for the
            # socket: MicroPython's IOQueue.remove() drops both waiters of a
            # socket, so a writer queued there when the session's reader is
            # cancelled would never be woken. A session that ended meanwhile
            # closed the socket: the send is over (offline), not a crash of
            # its caller's task on the closed socket's EBADF.
            while pkt:
                if self.sock is not sock:
                    raise MQTTError("offline")
                try:
                    n = sock.write(pkt)
                except OSError as e:  # reset, broken pipe: the connection is gone
                    self.dead = True
                    raise MQTTError("send: %r" % e) from None
                if n is None:
                    if ticks_diff(ticks_ms(), t0) > SEND_MS:
                        self.dead = True
                        raise MQTTError("send timed out")
                    await asyncio.sleep_ms(10)
                else:
                    pkt = pkt[n:]
        finally:
            if self._busy is sock:  # (not the next connection's: it may be mid-packet)
                self._busy = False
        self.tx = ticks_ms()

    async def read(self, n):
        """n bytes from the broker (EOFError when it closed the connection)."""
        buf = self.buf
        rb = self._rb
        sock = self.sock
        if sock is None:
            raise MQTTError("offline")
        while len(buf) < n:
            await _io(sock)
            # Into one buffer kept for the purpose: a fresh 512-byte one per
            # read is what fragments a small heap.
            k = sock.readinto(rb)
            if k is None:
                continue
            if not k:
                raise EOFError("closed by the broker")
            buf += rb[:k]
        self.buf = buf[n:]
        return buf[:n]

    async def run(self):
        """Connect, and again after every failure, for ever. Watches the
        connection meanwhile: CONNECT_MS to come up, then keepalive (a
        PINGREQ when quiet for half the period; no answer to it within
        another half and 2 s means the broker is gone)."""
        failures = 0
        half = self.keepalive * 500
        try:
            while True:
                failures = await self._once(failures, half)
        finally:
            t = self._task
            if t is not None:
                t.cancel()  # restarted by the supervisor: no orphan session left

    async def _once(self, failures, half):
        """One connection, watched until it ends; then the backoff. The
        failures so far, after it."""
        self.t_up = None
        self.dead = False
        t0 = ticks_ms()
        self._task = task = asyncio.create_task(session(self))
        ping: Any = None  # ticks of the PINGREQ awaiting its answer
        while not task.done():
            await asyncio.sleep_ms(250)
            self._beat()
            now = ticks_ms()
            why = None
            if self.dead:
                why = "a send timed out"
            elif self.t_up is None:
                if ticks_diff(now, t0) > CONNECT_MS:
                    why = "no answer from the broker"
            elif ping is not None and ticks_diff(self.rx, ping) >= 0:
                ping = None
            elif ping is not None:
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
        if self.t_up is not None and not 0 <= ticks_diff(ticks_ms(), self.t_up) <= 10000:
            failures = 0  # it was up a while (days: the ticks wrapped): backoff afresh
        delay = min(self.cap_ms, 1000 << min(failures, 6))
        failures += 1
        # Jitter: 190 nodes must not all come back in the same second.
        delay = delay // 2 + random.getrandbits(16) % (delay // 2 + 1)
        if self.urgent:
            delay = min(delay, URGENT_MS)
        log("INFO", "mqtt: again in %d ms%s" % (delay, " (a call is open)" if self.urgent else ""))
        # Waited in steps: a call opened meanwhile cuts it to URGENT_MS (a
        # call pressed an hour into an outage must not wait 30 s more once
        # the network is back), and the link coming back ends it at once.
        t0 = ticks_ms()
        while not self.kick and ticks_diff(ticks_ms(), t0) < (
            min(delay, URGENT_MS) if self.urgent else delay
        ):
            self._beat()
            await asyncio.sleep_ms(100)
        if self.kick:
            self.kick = False
            failures = 0
            log("INFO", "mqtt: the link is back: connecting now")
        return failures

    def _beat(self):
        s = self.sup
        if s:
            s.beat("mqtt")
