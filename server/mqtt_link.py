"""The server's MQTT connection: follows the retained room states, publishes
the registry (retained). Reconnects by itself, with backoff and jitter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiomqtt

from mamaroom.config import MqttSettings
from mamaroom.contract import (
    DEVICE_TOPIC_PREFIX,
    GATEWAY_SUBSCRIPTION,
    GATEWAY_TOPIC_PREFIX,
    REGISTRY_TOPIC,
    ROOM_STATE_SUBSCRIPTION,
    SERVER_ALERT_SUBSCRIPTION,
    SERVER_STATUS_SUBSCRIPTION,
    SERVER_TOPIC_PREFIX,
    Call,
    CallAck,
    ContractError,
    GatewayStats,
    GatewayTopicKind,
    Kind,
    Occupancy,
    Registry,
    RoomState,
    ServerStatus,
    device_subscription,
    device_topic,
    dumps,
    parse_device_topic,
    parse_gateway_topic,
    parse_payload,
    parse_room_state_topic,
    parse_server_topic,
    parse_status,
    server_alert_topic,
    server_status_topic,
)
from mamaroom.logs import get_logger
from mamaroom.mqtt_socket import NO_DELAY
from server.services.alert_model import Alert, with_enums
from server.services.alerts import AlertService
from server.services.rooms import LiveRooms
from server.services.welfare import WelfareCheck

log = get_logger(__name__)
#: Longest wait for the broker's PUBACK of a call status (see send_call_ack).
ACK_PUBLISH_TIMEOUT_S = 2.0


@dataclass
class GatewayView:
    """What the server knows of one gateway, from its retained topics."""

    #: Its session is alive (`status` `online`).
    up: bool = False
    stats: GatewayStats | None = None


class ServerMqtt:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        rooms: LiveRooms,
        registry: Registry,
        alerts: AlertService,
        welfare: WelfareCheck | None = None,
        *,
        handles_calls: bool = True,
        on_newer_registry: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """`handles_calls`: subscribe to the nodes' calls and statuses (not so
        on a server of role `web`, which learns of alerts from its peers).
        `on_newer_registry`: another server published a newer registry."""
        self._handles_calls = handles_calls
        self._on_newer_registry = on_newer_registry
        self._settings = settings
        self._client_id = client_id
        self._rooms = rooms
        self._registry = registry
        self._device_rooms = registry.device_rooms()
        self._alerts = alerts
        self._welfare = welfare
        self._peer_sends: set[asyncio.Task[None]] = set()
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        #: Each gateway's retained summary and status, for /metrics.
        self.gateways: dict[str, GatewayView] = {}
        #: Every other server's retained status (mr/v1/server/{id}/status).
        self.servers: dict[str, ServerStatus] = {}

    def _status(self, state: str) -> bytes:
        return ServerStatus(state=state, takes_calls=self._handles_calls).model_dump_json().encode()

    def calls_taken(self) -> bool:
        """Some server takes the nodes' calls: this one, or another that says
        it is online (a `web` server is not ready without one)."""
        return self._handles_calls or any(
            s.state == "online" and s.takes_calls for s in self.servers.values()
        )

    def calls_servers(self) -> list[str]:
        """The servers that take calls, as last heard of, for /readyz."""
        return [f"{i} {s.state}" for i, s in sorted(self.servers.items()) if s.takes_calls]

    async def say_offline(self) -> None:
        """On a clean stop: tell the other servers at once (the last will
        would come only after the broker noticed)."""
        client = self._client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    server_status_topic(self._client_id),
                    self._status("offline"),
                    qos=1,
                    retain=True,
                    timeout=2,
                )

    async def publish_registry(self, registry: Registry) -> None:
        """Publish now if connected; it is re-published on every (re)connect anyway."""
        self._registry = registry
        self._device_rooms = registry.device_rooms()
        if self._client is not None and self.connected.is_set():
            try:
                await self._client.publish(REGISTRY_TOPIC, dumps(registry), qos=1, retain=True)
            except aiomqtt.MqttError as exc:
                log.warning("registry publish failed; will re-publish on reconnect", error=str(exc))

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                async with aiomqtt.Client(
                    self._settings.host,
                    self._settings.port,
                    identifier=self._client_id,
                    username=self._settings.username,
                    password=self._settings.password,
                    # A persistent session: calls and staff-key resets sent while
                    # this server restarts wait at the broker (queued QoS 1).
                    keepalive=self._settings.keepalive_s,
                    clean_session=False,
                    tls_params=aiomqtt.TLSParameters() if self._settings.tls else None,
                    socket_options=[NO_DELAY],
                    will=aiomqtt.Will(
                        server_status_topic(self._client_id),
                        self._status("offline"),
                        qos=1,
                        retain=True,
                    ),
                ) as client:
                    self._client = client
                    await client.subscribe(ROOM_STATE_SUBSCRIPTION, qos=1)
                    await client.subscribe(GATEWAY_SUBSCRIPTION, qos=0)
                    if self._handles_calls:
                        await client.subscribe(device_subscription(Kind.CALL), qos=1)
                        await client.subscribe(device_subscription(Kind.STATUS), qos=1)
                    # Servers sharing one database tell each other of every
                    # alert change they make, so each one's consoles show them all.
                    await client.subscribe(SERVER_ALERT_SUBSCRIPTION, qos=1)
                    await client.subscribe(SERVER_STATUS_SUBSCRIPTION, qos=1)
                    if self._on_newer_registry is not None:
                        await client.subscribe(REGISTRY_TOPIC, qos=1)
                    if self._welfare is not None:
                        await client.subscribe(device_subscription(Kind.OCCUPANCY), qos=1)
                    await client.publish(REGISTRY_TOPIC, dumps(self._registry), qos=1, retain=True)
                    await client.publish(
                        server_status_topic(self._client_id),
                        self._status("online"),
                        qos=1,
                        retain=True,
                    )
                    self.connected.set()
                    delay = 1.0
                    log.info("mqtt connected", url=self._settings.url)
                    async for message in client.messages:
                        topic, payload = str(message.topic), bytes(message.payload)
                        if topic.startswith(DEVICE_TOPIC_PREFIX):
                            await self._on_device(topic, payload)
                        else:
                            self._on_message(topic, payload)
            except aiomqtt.MqttError as exc:
                if self.connected.is_set():
                    log.warning("mqtt connection lost; reconnecting", error=str(exc))
                else:
                    log.warning(
                        "mqtt broker unreachable; retrying",
                        url=self._settings.url,
                        error=str(exc),
                        retry_in_s=round(delay, 1),
                    )
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay * random.uniform(0.7, 1.3))
            delay = min(delay * 2, 30.0)

    async def send_call_ack(self, device: str, ack: CallAck) -> None:
        """A call's status to its node (QoS 1, persistent session at the node)."""
        client = self._client
        if client is None or not self.connected.is_set():
            log.warning(
                "broker away: call status not sent now; re-sent when the node or "
                "the server reconnects",
                device=device,
                call_id=ack.call_id,
            )
            return
        try:
            # The message loop waits here, so never long: aiomqtt does not fail a
            # publish whose connection died; it waits out its timeout (10 s), and
            # the server heard no other call meanwhile (seen in tests/chaos). A
            # `received` lost this way is sent again on the node's next press
            # (3 s); a later status when the node is back online (its retained
            # `online` reaches the server again on every reconnect of either).
            await client.publish(
                device_topic(device, Kind.CMD), dumps(ack), qos=1, timeout=ACK_PUBLISH_TIMEOUT_S
            )
        except aiomqtt.MqttError as exc:
            log.warning("call status not sent", device=device, error=str(exc))

    async def _on_device(self, topic: str, payload: bytes) -> None:
        """Calls and node statuses (the gateway stores them; the server acts on them)."""
        try:
            device, kind = parse_device_topic(topic)
            room = self._device_rooms.get(device)
            if room is None:
                return  # the gateway counts unknown devices
            if kind is Kind.STATUS:
                if parse_status(payload) == "online":
                    await self._alerts.on_device_online(device)
            elif kind is Kind.CALL:
                call = parse_payload(Kind.CALL, payload)
                assert isinstance(call, Call)
                await self._alerts.on_call(device, room, call)
            elif kind is Kind.OCCUPANCY and self._welfare is not None:
                occupancy = parse_payload(Kind.OCCUPANCY, payload)
                assert isinstance(occupancy, Occupancy)
                await self._welfare.on_occupancy(device, room, occupancy)
        except ContractError as exc:
            log.debug(
                "ignoring a bad device message (the gateway counts it)",
                topic=topic,
                reason=exc.reason.value,
            )

    def tell_peers(self, alert: Alert) -> None:
        """An alert change made here, for the other servers' consoles."""
        if self._client is None or not self.connected.is_set() or alert.get("id", 0) <= 0:
            return
        task = asyncio.create_task(self._publish_peer(self._client, alert))
        self._peer_sends.add(task)
        task.add_done_callback(self._peer_sends.discard)

    async def _publish_peer(self, client: aiomqtt.Client, alert: Alert) -> None:
        try:
            await client.publish(
                server_alert_topic(self._client_id),
                json.dumps(alert),
                qos=1,
                timeout=ACK_PUBLISH_TIMEOUT_S,
            )
        except aiomqtt.MqttError as exc:
            log.warning(
                "alert change not sent to other servers", alert=alert.get("id"), error=str(exc)
            )

    def _on_peer(self, topic: str, payload: bytes) -> None:
        try:
            peer, kind = parse_server_topic(topic)
        except ValueError:
            return
        if peer == self._client_id:
            return  # our own
        if kind == "status":
            if not payload:  # a cleared retained status: that server is gone for good
                self.servers.pop(peer, None)
                return
            try:
                status = ServerStatus.model_validate_json(payload)
            except ValueError:
                log.warning("ignoring a bad server status", topic=topic)
                return
            if self.servers.get(peer) != status:
                log.info("server status", server=peer, **status.model_dump())
            self.servers[peer] = status
            return
        if kind != "alert":
            return
        try:
            raw = json.loads(payload)
            if not (isinstance(raw, dict) and isinstance(raw.get("id"), int)):
                raise ValueError("not an alert")
            alert = with_enums(raw)
        except (ValueError, KeyError):
            log.warning("ignoring a bad alert from another server", topic=topic)
            return
        self._alerts.from_peer(alert)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.startswith(GATEWAY_TOPIC_PREFIX):
            self._on_gateway(topic, payload)
            return
        if topic.startswith(SERVER_TOPIC_PREFIX):
            self._on_peer(topic, payload)
            return
        if topic == REGISTRY_TOPIC:
            self._on_registry(payload)
            return
        try:
            room = parse_room_state_topic(topic)
            state = RoomState.model_validate_json(payload) if payload else None
        except ValueError as exc:
            log.warning("ignoring a bad room state", topic=topic, error=str(exc)[:200])
            return
        if state is not None and state.room != room:
            log.warning("ignoring a room state filed under another room", topic=topic)
            return
        self._rooms.set_state(room, state)

    def _on_registry(self, payload: bytes) -> None:
        try:
            version = Registry.model_validate_json(payload).version
        except ValueError:
            log.warning("ignoring a bad registry publication")
            return
        if version > self._registry.version and self._on_newer_registry is not None:
            task = asyncio.create_task(self._on_newer_registry())
            self._peer_sends.add(task)
            task.add_done_callback(self._peer_sends.discard)

    def _on_gateway(self, topic: str, payload: bytes) -> None:
        try:
            gateway, kind = parse_gateway_topic(topic)
        except ValueError:
            return
        entry = self.gateways.setdefault(gateway, GatewayView())
        if kind is GatewayTopicKind.STATUS:
            entry.up = payload == b"online"
            return
        try:
            entry.stats = GatewayStats.model_validate_json(payload)
        except ValueError:
            log.warning("ignoring bad gateway stats", topic=topic)
