# MQTT 3.1.1 on the wire, and one connection of a Client (mqtt.py): CONNECT
# with the will, the subscriptions again, the unacknowledged QoS 1 publishes
# again (DUP), the retained birth, keepalive pings, and the broker's packets
# read as they come (PUBACK, SUBACK, PINGRESP; a PUBLISH is handled, then
# acknowledged).
import asyncio
import socket
from time import ticks_ms

from log import exc, log

NODELAY = (6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY, on: raw numbers, as not every port names them
# A command is a few hundred bytes; a bigger message is read away, never held
# (the contract's 4 KiB would not fit the heap of a busy node in one piece).
MAX_PAYLOAD = 1024


class MQTTError(Exception):
    pass


def encode_str(s):
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def packet(kind, body):
    """A whole packet: fixed header, remaining length, body."""
    head = bytearray((kind,))
    n = len(body)
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | 0x80 if n else b)
        if not n:
            return head + body


async def session(c):
    """One connection of client `c` (mqtt.py), until it fails; Client.run
    watches it (connect timeout, keepalive) and cancels it when it hangs."""
    try:
        if c.addr is None:
            # A blocking DNS look-up on the board: better an IP address in config.json.
            c.addr = socket.getaddrinfo(c.host, c.port, 0, socket.SOCK_STREAM)[0]
        ai = c.addr
        sock = socket.socket(ai[0], ai[1], ai[2])
        try:
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
                sock = c.ssl.wrap_socket(sock, server_hostname=c.host,
                                         do_handshake_on_connect=False)
                sock.setblocking(False)
            c.sock = sock
            c.buf = b""
            await _connect(c)
            await _read_packets(c)
        finally:
            c.up = False
            c.sock = None
            sock.close()
    except asyncio.CancelledError:
        raise
    except Exception as e:  # broker away, refused, reset: Client.run tries again
        exc("mqtt: %s:%d" % (c.host, c.port), e)


async def _connect(c):
    """CONNECT (clean session off, will, keepalive, user, password) and its
    CONNACK; the subscriptions; what is in flight again (DUP); the birth."""
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
    await c.send(packet(0x10, b"\x00\x04MQTT\x04" + bytes(
        (flags, c.keepalive >> 8, c.keepalive & 0xFF)) + tail))
    ack = await c.read(4)
    if ack[0] != 0x20 or ack[3]:
        raise MQTTError("refused: CONNACK %d" % ack[3])
    c.t_up = c.rx = ticks_ms()
    for topic in c.subs:  # always: the broker may have lost the session
        pid = c.next_pid()
        await c.send(packet(0x82, bytes((pid >> 8, pid & 0xFF)) + encode_str(topic) + b"\x01"))
    for pid in sorted(c.inflight, key=lambda p: c.inflight[p][0]):
        pkt = c.inflight[pid][1]
        pkt[0] |= 8  # DUP: a retransmission
        await c.send(pkt)
    if c.birth:
        await c.put(c.birth[0], c.birth[1], 1, True)
    c.up = True
    c.connects += 1
    log("INFO", "mqtt: online at %s:%d (session %s)" % (
        c.host, c.port, "resumed" if ack[2] & 1 else "new"))
    if c.on_up:
        c.on_up()


async def _read_packets(c):
    while True:
        head = (await c.read(1))[0]
        n = shift = 0
        while True:
            b = (await c.read(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 21:
                raise MQTTError("bad packet length")
        c.rx = ticks_ms()
        kind = head & 0xF0
        if kind != 0x30:
            body = await c.read(n) if n else b""
            if kind == 0x40:  # PUBACK
                c.inflight.pop(body[0] << 8 | body[1], None)
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
                    c.on_msg(topic, payload)
            except Exception as e:  # a bad message never takes the connection down
                exc("mqtt: message handler", e)
        if head & 6:  # QoS 1: acknowledged after it was handled
            await c.send(bytes((0x40, 2, pid >> 8, pid & 0xFF)))
