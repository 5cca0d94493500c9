"""The gateway: device messages in, validated, stored, room states out.

A pipeline: source (MQTT, manual ack) → decode/validate → enrich (device to
room, from the registry) → store (deduplicated on (device, boot, seq)) →
derive room state → publish retained → acknowledge to the broker. A message
is acknowledged only after it is durably handled, so a crash anywhere before
that makes the broker deliver it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import start_http_server

from gateway.decode import DeviceMessage, StatusUpdate, decode
from gateway.metrics import GatewayMetrics
from gateway.mqtt_link import Inbox, MqttLink
from gateway.rooms import RoomTracker
from mamaroom.config import Settings
from mamaroom.contract import (
    REGISTRY_TOPIC,
    ContractError,
    Registry,
    RejectReason,
    RoomState,
    dumps,
    room_state_topic,
)
from mamaroom.logs import get_logger
from mamaroom.storage import Record, StorageError
from mamaroom.storage.sqlite import SqliteStore

log = get_logger(__name__)
T = TypeVar("T")

DEVICE_TREE = "mr/v1/dev/#"


def wall_ms() -> int:
    return int(time.time() * 1000)


class Gateway:
    def __init__(self, settings: Settings, *, clock: Callable[[], int] = wall_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = GatewayMetrics()
        self.store = SqliteStore(settings.store_path)
        self.tracker = RoomTracker(settings.gateway.supervision_s)
        self.registry_ready = asyncio.Event()
        self._registry_version = -1
        self._ingest: MqttLink | None = None
        self._registry_link: MqttLink | None = None

    async def run(self) -> None:
        cfg = self.settings.gateway
        await self.store.open()
        self.tracker.restore(await self.store.devices(), await self.store.room_states())
        metrics_server = None
        if cfg.metrics_port:
            metrics_server, _ = start_http_server(
                cfg.metrics_port, cfg.metrics_host, registry=self.metrics.registry)
            log.info("metrics served", url=f"http://{cfg.metrics_host}:{cfg.metrics_port}/metrics")
        # The registry has its own connection: device messages held unacknowledged
        # on the ingest connection fill the broker's in-flight window, and must
        # not stand in front of the registry the gateway waits for.
        self._registry_link = MqttLink(
            self.settings.mqtt, client_id=f"{cfg.client_id}-registry",
            subscriptions=[(REGISTRY_TOPIC, 1)], clean_session=True, manual_ack=False)
        self._ingest = MqttLink(
            self.settings.mqtt, client_id=cfg.client_id,
            subscriptions=[(DEVICE_TREE, 1)], clean_session=False, manual_ack=True,
            on_connected=self._republish_all)
        self._registry_link.start()
        self._ingest.start()
        log.info("gateway started", broker=self.settings.mqtt.url,
                 store=str(self.settings.store_path), client_id=cfg.client_id)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow_registry())
                tasks.create_task(self._consume())
                tasks.create_task(self._supervise())
        finally:
            await self._registry_link.stop()
            await self._ingest.stop()
            await self.store.close()
            if metrics_server is not None:
                metrics_server.shutdown()
            log.info("gateway stopped")

    # --- registry -------------------------------------------------------------

    async def _follow_registry(self) -> None:
        assert self._registry_link is not None
        while True:
            item = await self._registry_link.messages.get()
            if not item.payload:
                continue
            try:
                registry = Registry.model_validate_json(item.payload)
            except ValueError as exc:
                log.error("ignoring a bad registry message", error=str(exc)[:200])
                continue
            if registry.version == self._registry_version:
                continue  # the same registry again (a reconnect re-delivers it)
            self._registry_version = registry.version
            changed, removed = self.tracker.set_registry(registry, self.clock())
            for room in removed:
                self._publish_raw(room_state_topic(room), b"")
            await self.store.forget_room_states(removed)
            await self._publish_states(changed)
            log.info("registry applied", version=registry.version, rooms=len(registry.rooms),
                     changed=len(changed), removed=len(removed))
            self.registry_ready.set()

    # --- ingest ---------------------------------------------------------------

    async def _consume(self) -> None:
        assert self._ingest is not None
        # Until the registry is known, a device cannot be mapped to a room;
        # messages wait unacknowledged at the broker rather than being refused.
        while not self.registry_ready.is_set():
            try:
                await asyncio.wait_for(self.registry_ready.wait(), timeout=15)
            except TimeoutError:
                log.warning("still waiting for the room registry; is the server running?",
                            topic=REGISTRY_TOPIC)
        queue = self._ingest.messages
        while True:
            batch = [await queue.get()]
            while len(batch) < self.settings.gateway.batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            self.metrics.pending.set(len(batch) + queue.qsize())
            await self._handle_batch(batch)

    async def _handle_batch(self, batch: list[Inbox]) -> None:
        assert self._ingest is not None
        now = self.clock()
        records: list[Record] = []
        changed: list[RoomState] = []
        for item in batch:
            try:
                inbound = decode(item.topic, item.payload, item.retained)
            except ContractError as exc:
                self._reject(item, exc.reason, exc.detail)
                continue
            if inbound is None:
                continue
            room = self.tracker.room_of(inbound.device)
            if room is None:
                self._reject(item, RejectReason.UNKNOWN_DEVICE, "not in the registry")
                await self._store_retrying(functools.partial(
                    self.store.note_unknown_device, inbound.device, item.topic, now))
                continue
            if isinstance(inbound, StatusUpdate):
                self.metrics.received.labels("status").inc()
                live = not inbound.retained
                await self._store_retrying(functools.partial(
                    self.store.note_status, inbound.device, room, inbound.status, now, live))
                changed += self.tracker.on_status(inbound.device, inbound.status, live, now)
            elif isinstance(inbound, DeviceMessage):
                self.metrics.received.labels(inbound.kind.value).inc()
                records.append(Record(inbound.device, room, inbound.kind, inbound.message, now))
        if records:
            fresh = await self._store_retrying(lambda: self.store.write(records))
            for rec, is_new in zip(records, fresh, strict=True):
                if is_new:
                    self.metrics.stored.labels(rec.kind.value).inc()
                    changed += self.tracker.on_message(rec.device, rec.message, rec.time_ms, now)
                else:
                    self.metrics.duplicates.inc()
                    log.debug("duplicate ignored", device=rec.device, boot=rec.message.boot,
                              seq=rec.message.seq)
        await self._publish_states(changed)
        for item in batch:
            self._ingest.ack(item)
        self.metrics.pending.set(self._ingest.messages.qsize())

    def _reject(self, item: Inbox, reason: RejectReason, detail: str) -> None:
        self.metrics.rejected.labels(reason.value).inc()
        log.warning("message rejected", reason=reason.value, topic=item.topic[:120],
                    detail=detail[:200], size=len(item.payload))

    async def _store_retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Retry a storage call until it works: the messages stay unacknowledged
        meanwhile, so the broker holds them and nothing is lost."""
        delay = 0.5
        while True:
            try:
                return await op()
            except StorageError as exc:
                self.metrics.storage_errors.inc()
                log.error("storage write failed; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30)

    # --- room states -------------------------------------------------------------

    async def _supervise(self) -> None:
        period = min(5.0, self.settings.gateway.supervision_s / 10)
        await self.registry_ready.wait()
        while True:
            await asyncio.sleep(period)
            await self._publish_states(self.tracker.tick(self.clock()))

    async def _publish_states(self, states: list[RoomState]) -> None:
        if not states:
            return
        latest = {s.room: s for s in states}  # a batch may change a room twice
        await self._store_retrying(
            lambda: self.store.save_room_states(self.tracker.rows(list(latest.values()))))
        for state in latest.values():
            self._publish_raw(room_state_topic(state.room), dumps(state))
            self.metrics.room_states.inc()
            log.info("room state", room=state.room, state=state.state.value,
                     reason=state.reason, device=state.device)

    def _publish_raw(self, topic: str, payload: bytes) -> None:
        assert self._ingest is not None
        self._ingest.publish(topic, payload, qos=1, retain=True)

    def _republish_all(self) -> None:
        """After a (re)connect, re-assert every room's retained state: a broker
        that restarted without persistence has forgotten them."""
        if not self.registry_ready.is_set():
            return
        for state in self.tracker.all_states():
            self._publish_raw(room_state_topic(state.room), dumps(state))


async def run_gateway(settings: Settings) -> None:
    gateway = Gateway(settings)
    with contextlib.suppress(asyncio.CancelledError):
        await gateway.run()
