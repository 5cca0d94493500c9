"""The gateway's MQTT connection: paho-mqtt with manual acknowledgement.

aiomqtt 2.x sends PUBACK before the application sees a message (and drops
messages when its queue is full), so the gateway drives paho directly: paho's
network thread hands each message to the event loop, and the gateway calls
`ack()` only once the message is durably handled. Until then the broker keeps
it in flight and re-sends it (DUP) after a reconnect. The broker's in-flight
limit for this client (`max_inflight_messages`) bounds how many wait here.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.config import MqttSettings
from mamaroom.logs import get_logger
from mamaroom.mqtt_socket import no_delay

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Inbox:
    """A received message and the connection it came on (acks are per connection)."""

    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int
    connection: int
    #: The broker's DUP flag: a redelivery of a message it sent before.
    dup: bool = False


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
        self._birth = birth
        # The hand-over from paho's thread: a deque under a condition, bounded by
        # max_pending. When full, paho's thread waits, so the gateway stops
        # reading from the socket and the broker keeps the backlog. The event
        # loop is woken once per burst, not once per message.
        self._inbox: deque[Inbox] = deque()
        self._max_pending = max_pending or 10_000
        self._lock = threading.Condition()
        self._wake_scheduled = False
        self._arrived = asyncio.Event()
        # Each counter has one writer thread (paho's, the event loop's), so no lock.
        self._delivered = 0
        self._handled = 0
        self.connected = asyncio.Event()
        self._connection = 0  # bumped on every CONNACK
        self._client_id = client_id
        self._stopping = False
        self._client = paho.Client(
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
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # paho's network thread ----------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: object, _f: object, rc: object,
                    _p: object = None) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("mqtt connect refused", reason=str(rc), url=self._settings.url)
            return
        self._connection += 1
        no_delay(client.socket())
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        if self._birth:
            client.publish(self._birth[0], self._birth[1], qos=1, retain=True)
        self._loop.call_soon_threadsafe(self._connected_now)

    def _connected_now(self) -> None:
        log.info("mqtt connected", url=self._settings.url, client_id=self._client_id,
                 connection=self._connection)
        self.connected.set()
        if self._on_connected:
            self._on_connected()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, rc: object,
                       _p: object = None) -> None:
        self._loop.call_soon_threadsafe(self._disconnected_now, str(rc))

    def _disconnected_now(self, reason: str) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("mqtt connection lost; reconnecting", client_id=self._client_id,
                        reason=reason)
        self.connected.clear()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        item = Inbox(msg.topic, bytes(msg.payload), bool(msg.retain), msg.mid, msg.qos,
                     self._connection, bool(msg.dup))
        if self._manual_ack and msg.qos > 0:
            self._delivered += 1
        with self._lock:
            while len(self._inbox) >= self._max_pending and not self._stopping:
                self._lock.wait(1)  # back-pressure
            self._inbox.append(item)
            if not self._wake_scheduled:
                self._wake_scheduled = True
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._arrived.set()

    # event loop side -------------------------------------------------------------

    async def next_batch(self, max_items: int) -> list[Inbox]:
        """Wait for messages; return up to `max_items` of them, oldest first."""
        while True:
            with self._lock:
                if self._inbox:
                    n = min(max_items, len(self._inbox))
                    batch = [self._inbox.popleft() for _ in range(n)]
                    self._lock.notify_all()
                    return batch
                self._arrived.clear()
            await self._arrived.wait()

    @property
    def queued(self) -> int:
        return len(self._inbox)

    def start(self) -> None:
        self._client.connect_async(self._settings.host, self._settings.port,
                                   keepalive=self._settings.keepalive_s)
        self._client.loop_start()

    async def stop(self) -> None:
        self._stopping = True
        with self._lock:
            self._lock.notify_all()
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def ack(self, item: Inbox) -> None:
        """Tell the broker this message is handled. A message from an earlier
        connection is not acked: the broker has already re-sent it on this one."""
        if self._manual_ack and item.qos > 0:
            self._handled += 1
            if item.connection == self._connection:
                self._client.ack(item.mid, item.qos)

    @property
    def unacked(self) -> int:
        """Messages the broker delivered that are not yet handled and acknowledged."""
        return self._delivered - self._handled

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)
