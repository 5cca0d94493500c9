"""The gateway's MQTT connection: paho-mqtt with manual acknowledgement,
driven from the asyncio event loop.

aiomqtt 2.x sends PUBACK before the application sees a message (and drops
messages when its queue is full), so the gateway drives paho directly, and
calls `ack()` only once a message is durably handled. Until then the broker
keeps it in flight and re-sends it (DUP) after a reconnect.

paho runs without its network thread: the event loop watches the socket
(`add_reader`/`add_writer`) and calls paho's `loop_read`/`loop_write`/
`loop_misc`, as paho documents for external loops (aiomqtt does the same).
With one thread, paho and the gateway no longer fight over the GIL for every
message, and nothing needs a lock. Back-pressure: when `max_pending`
messages wait, the link stops reading the socket, so the broker holds the
backlog; it reads again once the gateway has caught up.

The hot path skips paho: the link reads device PUBLISHes (QoS 0 and 1)
straight from the buffered socket and writes their PUBACKs itself, a batch
in one `send`. paho's Python per inbound packet (its packet reader, an
`MQTTMessage` with a lock per message, the topic matcher) and per PUBACK
was about a third of what a message cost the gateway (bench/README.md).
Everything else (CONNACK, SUBACK, PUBACK of our own publishes, PINGRESP,
QoS 2) goes to paho, one whole frame at a time, in stream order; paho still
owns connecting, subscribing, publishing, keepalive and reconnecting.
Inbound QoS 1 needs no client state: with manual ack paho keeps none.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.config import MqttSettings
from mamaroom.logs import get_logger
from mamaroom.mqtt_socket import PUBACK, BufferedSocket, no_delay

log = get_logger(__name__)

#: paho's keepalive and retry housekeeping runs this often.
MISC_EVERY_S = 1.0
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0


class Inbox(NamedTuple):
    """A received message and the connection it came on (acks are per connection).
    A NamedTuple: immutable, and cheap to build once per message."""

    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int
    connection: int
    #: The broker's DUP flag: a redelivery of a message it sent before.
    dup: bool = False


class _Client(paho.Client):
    """paho over a `BufferedSocket`: one system call per burst of packets
    rather than three per packet read and one per PUBACK."""

    def _create_socket(self) -> Any:  # paho's own factory (tcp, tls, proxy)
        return BufferedSocket(super()._create_socket())


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        clean_session: bool = False,
        manual_ack: bool = True,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[], None] | None = None,
        birth: tuple[str, bytes] | None = None,
        max_pending: int = 0,
    ) -> None:
        self._settings = settings
        self._subscriptions = subscriptions
        self._on_connected = on_connected
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._birth = birth
        self._will = will
        self._inbox: deque[Inbox] = deque()
        self._max_pending = max_pending or 10_000
        # Read again below this, so pausing and resuming do not alternate per message.
        self._resume_below = max(1, self._max_pending * 3 // 4)
        self._arrived = asyncio.Event()
        self._delivered = 0
        self._handled = 0
        self.connected = asyncio.Event()
        self._connection = 0  # bumped on every CONNACK
        self._live = False  # CONNACK seen on the open socket: acks may go out
        self._client_id = client_id
        self._stopping = False
        self._sock: Any = None  # the socket paho opened, while open
        self._fd = -1  # its descriptor: asyncio's registrations are by descriptor
        self._reading = False  # reader registered on the loop
        self._paused = False  # back-pressure: not reading
        self._lost = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
            manual_ack=manual_ack,
        )
        self._manual_ack = manual_ack
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self._client.tls_set_context(ssl.create_default_context())
        if will:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        # paho queues QoS 1 publishes while disconnected; bound that memory.
        self._client.max_queued_messages_set(10_000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_register_write
        self._client.on_socket_unregister_write = self._on_unregister_write

    # paho callbacks (on the event loop, except socket open during connect) -----

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the event loop: now if we are on it, else soon.
        paho calls the socket callbacks from the connect worker thread too."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._on_loop(self._socket_opened, sock)

    def _socket_opened(self, sock: Any) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._live = False
        self._lost.clear()
        self._reading = False
        self._paused = self._backlog() >= self._max_pending
        self._start_reading()

    def _on_socket_close(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._on_loop(self._socket_closed, sock)

    def _socket_closed(self, sock: Any) -> None:
        if sock is not self._sock:
            return
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._reading = False
        self._live = False
        self._sock, self._fd = None, -1
        self._lost.set()

    def _on_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._on_loop(self._want_write, sock)

    def _want_write(self, sock: Any) -> None:
        if sock is self._sock:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        self._on_loop(self._no_write, sock)

    def _no_write(self, sock: Any) -> None:
        if sock is self._sock and not _unsent(sock):
            self._loop.remove_writer(self._fd)

    def _on_connect(
        self, client: paho.Client, _u: object, _f: object, rc: object, _p: object = None
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("mqtt connect refused", reason=str(rc), url=self._settings.url)
            return
        self._connection += 1
        self._live = True
        no_delay(client.socket())
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        if self._birth:
            client.publish(self._birth[0], self._birth[1], qos=1, retain=True)
        log.info(
            "mqtt connected",
            url=self._settings.url,
            client_id=self._client_id,
            connection=self._connection,
        )
        self.connected.set()
        if self._on_connected:
            self._on_connected()

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: object, rc: object, _p: object = None
    ) -> None:
        self._on_loop(self._disconnected_now, str(rc))

    def _disconnected_now(self, reason: str) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning(
                "mqtt connection lost; reconnecting", client_id=self._client_id, reason=reason
            )
        self.connected.clear()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        qos = msg.qos
        self._inbox.append(
            Inbox(
                msg.topic,
                bytes(msg.payload),
                bool(msg.retain),
                msg.mid,
                qos,
                self._connection,
                bool(msg.dup),
            )
        )
        if self._manual_ack and qos > 0:
            self._delivered += 1
        if self._backlog() >= self._max_pending:
            self._pause()
        self._arrived.set()

    # socket readiness -------------------------------------------------------------

    def _start_reading(self) -> None:
        sock = self._sock
        if sock is None or self._reading or self._paused:
            return
        self._loop.add_reader(self._fd, self._readable)
        self._reading = True
        if _pending(sock):  # bytes already decrypted (TLS) raise no readiness event
            self._loop.call_soon(self._readable)

    def _backlog(self) -> int:
        """Messages received and not yet acknowledged (or, on a link that
        does not acknowledge, not yet taken): what `max_pending` bounds."""
        return max(len(self._inbox), self._delivered - self._handled)

    def _pause(self) -> None:
        if self._paused:
            return
        self._paused = True
        if self._reading:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def _resume(self) -> None:
        if self._paused and self._backlog() < self._resume_below:
            self._paused = False
            self._start_reading()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None or self._paused:
            return
        sock.fill()
        self._take_frames(sock)
        if self._sock is sock and not self._paused and sock.inner_pending():
            self._loop.call_soon(self._readable)  # decrypted TLS bytes raise no event
        self._flush()  # PUBACKs of an auto-ack link; paho's answers (PUBREL, ...)

    def _take_frames(self, sock: BufferedSocket) -> None:
        """Every complete frame in the buffer, in order: PUBLISH QoS 0/1 here,
        the rest to paho. Stops early when the inbox is full (back-pressure)."""
        inbox = self._inbox
        before = len(inbox)
        auto_ack = not self._manual_ack
        room = self._max_pending - self._backlog()  # taken down per message: exact
        while True:
            frame = sock.next_frame()
            if frame is None:
                if sock.ended:
                    self._client.loop_read()  # paho sees the close and reports it
                break
            header, start, end = frame
            qos = (header >> 1) & 3
            if header >> 4 == 3 and qos < 2 and end - start >= 2:
                buf = sock.buffer
                topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                body = topic_end + 2 if qos else topic_end
                if body <= end:
                    mid = ((buf[topic_end] << 8) | buf[topic_end + 1]) if qos else 0
                    sock.consume(end)
                    # A topic that is not UTF-8 is kept, visibly replaced, and
                    # refused by the contract's topic check like any bad topic.
                    inbox.append(
                        Inbox(
                            buf[start + 2 : topic_end].decode("utf-8", "replace"),
                            buf[body:end],
                            bool(header & 1),
                            mid,
                            qos,
                            self._connection,
                            bool(header & 8),
                        )
                    )
                    if qos:
                        if auto_ack:
                            sock.send(PUBACK.pack(0x40, 2, mid))
                        else:
                            self._delivered += 1
                    room -= 1
                    if room <= 0:
                        self._pause()  # the bound is exact: not one frame more
                        break
                    continue
            # Not ours (or malformed): paho reads this one frame and no further.
            sock.limit = end
            at = sock.pos
            try:
                self._client.loop_read()
            finally:
                sock.limit = -1
            if self._sock is not sock or self._paused or sock.pos == at:
                break  # closed, full, or paho took nothing (never spin on it)
            room = self._max_pending - self._backlog()
        if len(inbox) != before:
            self._arrived.set()

    def _writable(self) -> None:
        self._client.loop_write()
        self._flush()

    def _flush(self) -> None:
        sock = self._sock
        if sock is None:
            return
        if _unsent(sock) and not sock.flush():
            self._loop.add_writer(self._fd, self._writable)  # the rest when writable
        elif not self._client.want_write():
            self._loop.remove_writer(self._fd)

    # event loop side -------------------------------------------------------------

    async def next_batch(self, max_items: int) -> list[Inbox]:
        """Wait for messages; return up to `max_items` of them, oldest first."""
        inbox = self._inbox
        while not inbox:
            self._arrived.clear()
            await self._arrived.wait()
        if len(inbox) <= max_items:
            batch = list(inbox)
            inbox.clear()
        else:
            batch = [inbox.popleft() for _ in range(max_items)]
        if self._paused:
            self._resume()
        return batch

    @property
    def queued(self) -> int:
        return len(self._inbox)

    def start(self) -> None:
        self._runner = self._loop.create_task(self._run(), name=f"mqtt {self._client_id}")

    async def _run(self) -> None:
        """Connect, keep paho's housekeeping going, reconnect with backoff."""
        delay = RECONNECT_MIN_S
        first = True
        while not self._stopping:
            self._lost.clear()
            connections = self._connection
            try:
                # Blocking (DNS, TCP, TLS handshake): on a worker thread.
                if first:
                    await asyncio.to_thread(
                        self._client.connect,
                        self._settings.host,
                        self._settings.port,
                        self._settings.keepalive_s,
                    )
                else:
                    await asyncio.to_thread(self._client.reconnect)
                first = False
            except (OSError, ValueError) as exc:
                log.warning(
                    "mqtt connect failed; retrying",
                    url=self._settings.url,
                    error=str(exc),
                    retry_in_s=round(delay, 1),
                )
            else:
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), MISC_EVERY_S)
                    if not self._lost.is_set():
                        self._client.loop_misc()  # keepalive pings, ping timeouts
                if self._connection != connections:
                    delay = RECONNECT_MIN_S  # it was up: retry soon
            if self._stopping:
                break
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def stop(self) -> None:
        self._stopping = True
        if self._will and self._live and self._sock is not None:
            # A clean DISCONNECT makes the broker discard the last will, so a
            # stopped gateway would look alive forever: say it ourselves.
            acked = asyncio.Event()
            info = self._client.publish(self._will[0], self._will[1], qos=1, retain=True)
            # paho calls on_publish on this loop (it reads in `_readable`).
            self._client.on_publish = lambda _c, _u, mid, *_: (
                acked.set() if mid == info.mid else None
            )
            if info.is_published():
                acked.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), 3)
            log.info("announced offline", topic=self._will[0], acked=acked.is_set())
        if self._sock is not None:
            self._client.disconnect()  # DISCONNECT is written, then paho closes the socket
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 5)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        sock = self._sock
        if sock is not None:  # the broker never took the DISCONNECT
            self._socket_closed(sock)
            sock.close()

    def ack(self, item: Inbox) -> None:
        self.ack_all((item,))

    def ack_all(self, items: Iterable[Inbox]) -> None:
        """Tell the broker these messages are handled: their PUBACKs in one
        `send`. A message from an earlier connection is not acked: the broker
        has already re-sent it on this one (or will, on the next)."""
        if not self._manual_ack:
            return
        sock, connection = self._sock, self._connection
        live = self._live and sock is not None
        acks = []
        for item in items:
            if item.qos > 0:
                self._handled += 1
                if live and item.connection == connection:
                    acks.append(PUBACK.pack(0x40, 2, item.mid))
        if acks and sock is not None:
            sock.send(b"".join(acks))
            self._flush()
        if self._paused:
            self._resume()

    @property
    def unacked(self) -> int:
        """Messages the broker delivered that are not yet handled and acknowledged."""
        return self._delivered - self._handled

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)


def _unsent(sock: Any) -> int:
    return int(getattr(sock, "unsent", 0))


def _pending(sock: Any) -> int:
    """Bytes the socket object holds already read from the kernel (TLS)."""
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0
