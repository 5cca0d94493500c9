"""A small MQTT 3.1.1 broker for `mamaroom demo` on machines with none.

Production uses Mosquitto (docs/deployment.md); this only lets the demo run
anywhere with nothing but Python. It was written because no broker on PyPI
carried the demo's 190 rooms (bench/embedded_broker.py measured the
candidates; bench/RESULTS-embedded-broker.md has the figures): amqtt 0.11
and 0.12 took 27-30 s to connect them, with dozens of disconnects, sent
every connecting client the retained messages of everyone else's
subscriptions (the nodes' "malformed command ignored") and dropped what
persistent sessions should have kept; amqtt 0.10 and moat-mqtt do not
install on Python 3.11; mqttools speaks only MQTT 5 at QoS 0; iotcore
(rumqttd, compiled) refuses the 71 KB registry at its defaults and, tuned,
still sends a new QoS 1 subscriber only 100 of the 190 retained statuses.

What the demo's clients need, and all this broker does:

- MQTT 3.1.1 (and 3.1) over plain TCP; user names and passwords are ignored.
- QoS 0 and 1 both ways; a QoS 2 publish is accepted (PUBREC/PUBCOMP) and
  passed on at QoS 1 at most.
- Retained messages (an empty retained payload clears one), sent to each
  new subscription with the retain flag.
- Last wills, published when a connection ends without DISCONNECT: closed,
  broken, silent past 1.5 × its keepalive, or taken over by a new
  connection with the same client id.
- Persistent sessions (clean session 0): subscriptions kept and QoS 1
  messages queued while the client is away (at most `max_queued` per
  session, oldest dropped first), unacknowledged ones sent again with DUP
  on its return. Kept in memory: a restart of the demo forgets them.
- `+` and `#` wildcards; `$`-topics are not matched by a leading wildcard.
  Shared subscriptions (`$share/...`) are refused in the SUBACK.

All of it runs on the caller's event loop, in tasks it owns; `stop()`
closes every connection and awaits every task, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from mamaroom.logs import get_logger

log = get_logger(__name__)

#: Largest packet accepted (Mosquitto's shipped `message_size_limit` is 2 MiB).
MAX_PACKET = 2 * 1024 * 1024 + 65_536
#: Bytes read from a client at once.
READ_SIZE = 65_536
#: A client that does not send its CONNECT within this is dropped.
CONNECT_TIMEOUT_S = 10.0
#: A consumer whose unsent bytes pile up past this is disconnected.
MAX_BUFFERED = 64 * 1024 * 1024

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

PINGRESP_PACKET = bytes([PINGRESP << 4, 0])
_AUTO_IDS = itertools.count(1)
_U16 = struct.Struct("!H")


def broker_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ProtocolError(Exception):
    """The client broke the protocol: its connection is closed."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(b: bytes) -> bytes:
    return _U16.pack(len(b)) + b


def publish_packet(
    topic: bytes, payload: bytes, qos: int, *, retain: bool, pid: int = 0, dup: bool = False
) -> bytes:
    head = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _str(topic) + (_U16.pack(pid) if qos else b"")
    return bytes([head]) + _length(len(body) + len(payload)) + body + payload


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7: `+` one level, `#` this level and all below."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


def valid_filter(pattern: str) -> bool:
    if not pattern or "\0" in pattern or pattern.startswith("$share/"):
        return False
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if "#" in part and (part != "#" or i != len(parts) - 1):
            return False
        if "+" in part and part != "+":
            return False
    return True


@dataclass(slots=True)
class Message:
    topic: bytes
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(eq=False)
class Session:
    client_id: str
    clean: bool
    max_inflight: int
    max_queued: int
    subscriptions: dict[str, int] = field(default_factory=dict)
    conn: Connection | None = None
    #: Sent at QoS 1, not yet acknowledged: packet id → message.
    inflight: OrderedDict[int, Message] = field(default_factory=OrderedDict)
    #: QoS 1 messages waiting for the client or for room in `inflight`.
    queued: deque[Message] = field(default_factory=deque)
    dropped: int = 0
    _ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))

    def deliver(self, msg: Message) -> None:
        conn = self.conn
        if msg.qos == 0:
            if conn is not None:
                conn.send(publish_packet(msg.topic, msg.payload, 0, retain=msg.retain))
            return
        if conn is not None and not self.queued and len(self.inflight) < self.max_inflight:
            self._send(conn, msg)
            return
        if len(self.queued) >= self.max_queued:
            self.queued.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning(
                    "embedded broker: session queue full, oldest dropped",
                    client_id=self.client_id,
                    dropped=self.dropped,
                )
        self.queued.append(msg)

    def _send(self, conn: Connection, msg: Message) -> None:
        pid = next(self._ids)
        while pid in self.inflight:
            pid = next(self._ids)
        self.inflight[pid] = msg
        conn.send(publish_packet(msg.topic, msg.payload, 1, retain=msg.retain, pid=pid))

    def acked(self, pid: int) -> None:
        self.inflight.pop(pid, None)
        self.pump()

    def pump(self) -> None:
        conn = self.conn
        while conn is not None and self.queued and len(self.inflight) < self.max_inflight:
            self._send(conn, self.queued.popleft())

    def resume(self, conn: Connection) -> None:
        """A returning client: what it has not acknowledged again (DUP), then the queue."""
        self.conn = conn
        for pid, msg in self.inflight.items():
            conn.send(
                publish_packet(msg.topic, msg.payload, 1, retain=msg.retain, pid=pid, dup=True)
            )
        self.pump()


class Connection:
    def __init__(
        self, broker: EmbeddedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.broker = broker
        self.reader = reader
        self.writer = writer
        self.session: Session | None = None
        self.will: Message | None = None
        self.keepalive = 0
        self.closed = False
        #: QoS 2 packet ids received and not yet released.
        self.qos2: set[int] = set()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        transport = self.writer.transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            log.warning(
                "embedded broker: client does not read; disconnected",
                client_id=self.session.client_id if self.session else None,
            )
            self.closed = True
            transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    @staticmethod
    def frames(buf: bytearray) -> list[tuple[int, int, bytes]]:
        """The complete packets at the start of `buf`, taken out of it."""
        out: list[tuple[int, int, bytes]] = []
        pos, size = 0, len(buf)
        while True:
            length, shift, i = 0, 0, pos + 1
            while i < size:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
            else:
                break  # the fixed header is not complete yet
            if length > MAX_PACKET:
                raise ProtocolError(f"packet of {length} bytes")
            if i + length > size:
                break
            out.append((buf[pos] >> 4, buf[pos] & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return out

    async def serve(self) -> None:  # noqa: C901 (one MQTT connection's packet loop)
        clean_end = False
        buf = bytearray()
        try:
            while True:
                if self.session is None:
                    wait: float | None = CONNECT_TIMEOUT_S
                else:
                    wait = self.keepalive * 1.5 if self.keepalive else None
                async with asyncio.timeout(wait):
                    data = await self.reader.read(READ_SIZE)
                if not data:
                    return
                buf += data
                if self.session is None and buf[0] >> 4 != CONNECT:
                    raise ProtocolError("first packet is not CONNECT")
                for kind, flags, body in self.frames(buf):
                    if self.session is None:
                        if kind != CONNECT:
                            raise ProtocolError("first packet is not CONNECT")
                        if not self.connect(body):
                            return
                    elif kind == DISCONNECT:
                        clean_end = True
                        return
                    else:
                        self.handle(kind, flags, body)
        except (ConnectionError, TimeoutError):
            pass
        except ProtocolError as exc:
            log.debug(
                "embedded broker: protocol error",
                error=str(exc),
                client_id=self.session.client_id if self.session else None,
            )
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            log.debug(
                "embedded broker: malformed packet",
                error=repr(exc),
                client_id=self.session.client_id if self.session else None,
            )
        except Exception as exc:  # one bad connection never takes the broker down
            log.warning(
                "embedded broker: connection failed",
                error=repr(exc),
                client_id=self.session.client_id if self.session else None,
            )
        finally:
            self.broker.disconnected(self, publish_will=not clean_end)
            self.close()

    def connect(self, body: bytes) -> bool:
        pos = 0

        def take_bytes() -> bytes:
            nonlocal pos
            (n,) = _U16.unpack_from(body, pos)
            if pos + 2 + n > len(body):
                raise ProtocolError("string past the end of the packet")
            pos += 2 + n
            return body[pos - n : pos]

        name = take_bytes()
        level, flags = body[pos], body[pos + 1]
        (self.keepalive,) = _U16.unpack_from(body, pos + 2)
        pos += 4
        if (name, level) not in ((b"MQTT", 4), (b"MQIsdp", 3)):
            self.send(bytes([CONNACK << 4, 2, 0, 1]))  # unacceptable protocol version
            return False
        if flags & 0x01:
            raise ProtocolError("reserved CONNECT flag set")
        clean = bool(flags & 0x02)
        client_id = take_bytes().decode()
        if flags & 0x04:
            will_topic = take_bytes()
            will_payload = take_bytes()
            self.will = Message(
                will_topic, will_payload, min((flags >> 3) & 0x03, 1), bool(flags & 0x20)
            )
        # The user name (0x80) and password (0x40) follow; the demo ignores them.
        if not client_id:
            if not clean:
                self.send(bytes([CONNACK << 4, 2, 0, 2]))  # identifier rejected
                return False
            client_id = f"auto-{next(_AUTO_IDS)}"
        present = self.broker.connected(self, client_id, clean=clean)
        self.send(bytes([CONNACK << 4, 2, 1 if present else 0, 0]))
        assert self.session is not None
        self.session.resume(self)
        return True

    def handle(self, kind: int, flags: int, body: bytes) -> None:  # noqa: C901 (one dispatch over MQTT's packet types)
        session = self.session
        assert session is not None
        if kind == PUBLISH:
            qos = (flags >> 1) & 0x03
            (n,) = _U16.unpack_from(body, 0)
            topic = body[2 : 2 + n]
            if qos == 3 or not topic or b"+" in topic or b"#" in topic:
                raise ProtocolError("bad PUBLISH")
            pos = 2 + n
            pid = 0
            if qos:
                (pid,) = _U16.unpack_from(body, pos)
                pos += 2
            msg = Message(topic, body[pos:], min(qos, 1), bool(flags & 0x01))
            if qos == 2:
                if pid not in self.qos2:
                    self.qos2.add(pid)
                    self.broker.route(msg)
                self.send(bytes([PUBREC << 4, 2]) + _U16.pack(pid))
                return
            self.broker.route(msg)
            if qos == 1:
                self.send(bytes([PUBACK << 4, 2]) + _U16.pack(pid))
        elif kind == PUBACK:
            session.acked(_U16.unpack_from(body, 0)[0])
        elif kind == PUBREL:
            (pid,) = _U16.unpack_from(body, 0)
            self.qos2.discard(pid)
            self.send(bytes([PUBCOMP << 4, 2]) + _U16.pack(pid))
        elif kind in (PUBREC, PUBCOMP):
            pass  # this broker never sends QoS 2
        elif kind == SUBSCRIBE:
            (pid,) = _U16.unpack_from(body, 0)
            pos, granted, added = 2, bytearray(), []
            while pos < len(body):
                (n,) = _U16.unpack_from(body, pos)
                pattern = body[pos + 2 : pos + 2 + n].decode()
                qos = body[pos + 2 + n]
                pos += 3 + n
                if not valid_filter(pattern) or qos > 2:
                    granted.append(0x80)
                    continue
                granted.append(min(qos, 1))
                session.subscriptions[pattern] = min(qos, 1)
                added.append(pattern)
            if not granted:
                raise ProtocolError("SUBSCRIBE without a topic filter")
            self.broker.subscriptions_changed()
            self.send(
                bytes([SUBACK << 4]) + _length(2 + len(granted)) + _U16.pack(pid) + bytes(granted)
            )
            for pattern in added:
                self.broker.send_retained(session, pattern)
        elif kind == UNSUBSCRIBE:
            (pid,) = _U16.unpack_from(body, 0)
            pos = 2
            while pos < len(body):
                (n,) = _U16.unpack_from(body, pos)
                session.subscriptions.pop(body[pos + 2 : pos + 2 + n].decode(), None)
                pos += 2 + n
            self.broker.subscriptions_changed()
            self.send(bytes([UNSUBACK << 4, 2]) + _U16.pack(pid))
        elif kind == PINGREQ:
            self.send(PINGRESP_PACKET)
        else:
            raise ProtocolError(f"unexpected packet type {kind}")


class EmbeddedBroker:
    def __init__(
        self, host: str, port: int, *, max_inflight: int = 1000, max_queued: int = 100_000
    ) -> None:
        self.host = host
        self.port = port
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, Session] = {}
        self._retained: dict[bytes, Message] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[Connection] = set()
        #: topic → the sessions subscribed to it and the QoS of each; rebuilt on change.
        self._routes: dict[bytes, list[tuple[Session, int]]] = {}
        self._stopping = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )

    async def stop(self) -> None:
        """Close the listener and every connection; return once all is gone."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()  # its task sees the end of its stream and returns
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):  # only a connection stuck past that
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None
        self._sessions.clear()
        self._retained.clear()
        self._routes.clear()

    # --- connections ----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._stopping or task is None:
            writer.close()
            return
        with contextlib.suppress(OSError):
            writer.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        conn = Connection(self, reader, writer)
        self._tasks.add(task)
        self._connections.add(conn)
        try:
            await conn.serve()
        except asyncio.CancelledError:
            # Only stop() cancels these. asyncio's streams (3.11) would report a
            # connection task that ends cancelled as an unhandled exception.
            if not self._stopping:
                raise
        finally:
            self._connections.discard(conn)
            self._tasks.discard(task)

    def connected(self, conn: Connection, client_id: str, *, clean: bool) -> bool:
        """Attach `conn` to its session (taking over a live one); True: session present."""
        old = self._sessions.get(client_id)
        if old is not None and old.conn is not None:
            previous = old.conn
            self.disconnected(previous, publish_will=True)  # taken over: its will goes out
            previous.close()
            old = self._sessions.get(client_id)
        present = old is not None and not clean
        if old is None or clean:
            session = Session(client_id, clean, self.max_inflight, self.max_queued)
            self._sessions[client_id] = session
            if old is not None:
                self.subscriptions_changed()
        else:
            session = old
            session.clean = False
        conn.session = session
        session.conn = conn
        return present

    def disconnected(self, conn: Connection, *, publish_will: bool) -> None:
        session = conn.session
        if session is None or session.conn is not conn:
            return  # never connected, or already taken over
        session.conn = None
        if session.clean:
            del self._sessions[session.client_id]
            self.subscriptions_changed()
        will, conn.will = conn.will, None
        if will is not None and publish_will and not self._stopping:
            self.route(will)

    # --- messages -------------------------------------------------------------------

    def subscriptions_changed(self) -> None:
        self._routes.clear()

    def _routes_for(self, topic: bytes) -> list[tuple[Session, int]]:
        routes = self._routes.get(topic)
        if routes is None:
            name = topic.decode(errors="replace")
            routes = []
            for session in self._sessions.values():
                qos = max(
                    (
                        q
                        for pattern, q in session.subscriptions.items()
                        if topic_matches(pattern, name)
                    ),
                    default=-1,
                )
                if qos >= 0:
                    routes.append((session, qos))
            if len(self._routes) > 100_000:
                self._routes.clear()
            self._routes[topic] = routes
        return routes

    def route(self, msg: Message) -> None:
        if msg.retain:
            if msg.payload:
                self._retained[msg.topic] = msg
            else:
                self._retained.pop(msg.topic, None)
        for session, qos in self._routes_for(msg.topic):
            session.deliver(Message(msg.topic, msg.payload, min(msg.qos, qos)))

    def send_retained(self, session: Session, pattern: str) -> None:
        qos = session.subscriptions.get(pattern, 0)
        for topic, msg in list(self._retained.items()):
            if topic_matches(pattern, topic.decode(errors="replace")):
                session.deliver(Message(topic, msg.payload, min(msg.qos, qos), retain=True))
