"""The gateway: device messages in, validated, stored, room states out.

A pipeline: source (MQTT, manual ack) → decode/validate → enrich (device to
room, from the registry) → store (deduplicated on (device, boot, seq)) →
derive room state → publish retained → acknowledge to the broker. A message
is acknowledged only after it is durably handled (written, or spooled), so a
crash anywhere before that makes the broker deliver it again.

Several gateways may share the ingest (`gateway.share_group`): each takes its
share of device messages through a shared subscription for storage, and also
follows every device message on a second, non-shared connection for room
state, so every gateway derives the same state from the whole stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import start_http_server

from gateway.decode import StatusUpdate, decode
from gateway.limits import Budget
from gateway.metrics import GatewayMetrics
from gateway.mqtt_link import Inbox, MqttLink
from gateway.rooms import RoomTracker
from mamaroom.clock import WallStepWatch, monotonic_ms, wall_ms
from mamaroom.config import Settings
from mamaroom.contract import (
    DEVICE_TREE,
    REGISTRY_TOPIC,
    TS_OUT_OF_RANGE,
    ContractError,
    GatewayTopicKind,
    Kind,
    Registry,
    RejectReason,
    RoomState,
    RoomStateName,
    device_subscription,
    device_topic,
    dumps,
    gateway_topic,
    message_time,
    room_state_topic,
    shared_subscription,
)
from mamaroom.logs import get_logger
from mamaroom.storage import Record, RefusedError, StorageError, Store, refresh_rollups
from mamaroom.storage.dead_letters import NewDeadLetter
from mamaroom.storage.rollups import HOUR_MS
from mamaroom.storage.stores import open_stores

log = get_logger(__name__)
T = TypeVar("T")

STATS_EVERY_S = 10.0
#: How often the log gets one line summing up the rooms.
SUMMARY_EVERY_S = 60.0
HOUSEKEEPING_EVERY_S = 3600.0
ROLLUP_EVERY_S = 600.0
ROLLUP_LOOKBACK_H = 24
#: One warning per device and this long for a flagged `ts` or a rate limit.
WARN_EVERY_MS = 60_000


@dataclass
class Decoded:
    """One batch after validation, waiting to be committed and acknowledged."""

    items: list[Inbox]
    now: int
    records: list[Record] = field(default_factory=list)
    statuses: list[tuple[StatusUpdate, str]] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)
    #: Messages that broke something while being decoded: set aside, not lost.
    dead: list[NewDeadLetter] = field(default_factory=list)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], int] = wall_ms,
        mono: Callable[[], int] = monotonic_ms,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.mono = mono
        self.steps = WallStepWatch(wall=clock, mono=mono)
        cfg = settings.gateway
        self.budget = Budget(cfg.device_rate_per_s, cfg.device_burst)
        self.call_budget = Budget(cfg.call_rate_per_s, cfg.call_burst)
        self._warned: dict[tuple[str, str], int] = {}
        self.metrics = GatewayMetrics()
        # Device health, room states, unknown devices, dead letters: always
        # the embedded file; the time series there too, or in InfluxDB.
        stores = open_stores(
            settings,
            gateway=settings.gateway.client_id,
            on_batch=self._influx_batch,
            on_error=self.metrics.influx_errors.inc,
        )
        self.embedded = stores.embedded
        self.devices = stores.embedded.devices
        self.series: Store = stores.series
        self.influx = stores.influx
        self.tracker = RoomTracker(settings.gateway.supervision_s, mono=mono)
        #: Room state changes since the last summary line.
        self.state_changes = 0
        self.registry_ready = asyncio.Event()
        self._registry_version = -1
        self._links: list[MqttLink] = []
        self._ingest: MqttLink | None = None
        self._state_topics: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.settings.gateway
        await self.embedded.open()
        if self.influx:
            await self.influx.open()
        # The boots each device has had, newest first, from the loss audit:
        # a late message from one of them must not flip state after a restart.
        boots: dict[str, list[int]] = {}
        with contextlib.suppress(StorageError):
            audit = await self.series.seq_gaps()
            for gap in sorted(audit, key=lambda g: g.updated_ms, reverse=True):
                boots.setdefault(gap.device, []).append(gap.boot)
        self.tracker.restore(
            await self.devices.devices(),
            await self.devices.room_states(),
            self.clock(),
            boots,
        )
        await self._count_dead_letters()
        metrics_server = None
        if cfg.metrics_port:
            metrics_server, _ = start_http_server(
                cfg.metrics_port, cfg.metrics_host, registry=self.metrics.registry
            )
            log.info("metrics served", url=f"http://{cfg.metrics_host}:{cfg.metrics_port}/metrics")
        mqtt = self.settings.mqtt
        # The registry has its own connection: device messages held unacknowledged
        # on the ingest connection fill the broker's in-flight window, and must
        # not stand in front of the registry the gateway waits for.
        registry_link = MqttLink(
            mqtt,
            client_id=f"{cfg.client_id}-registry",
            subscriptions=[(REGISTRY_TOPIC, 1)],
            clean_session=True,
            manual_ack=False,
        )
        if cfg.share_group:
            ingest_subs = [
                (shared_subscription(cfg.share_group, DEVICE_TREE), 1),
                # Retained messages never reach shared subscriptions.
                (device_subscription(Kind.STATUS), 1),
            ]
        else:
            ingest_subs = [(DEVICE_TREE, 1)]
        self._ingest = MqttLink(
            mqtt,
            client_id=cfg.client_id,
            subscriptions=ingest_subs,
            clean_session=False,
            manual_ack=True,
            max_pending=cfg.max_pending,
            on_connected=self._republish_all,
            will=(gateway_topic(cfg.client_id, GatewayTopicKind.STATUS), b"offline"),
            birth=(gateway_topic(cfg.client_id, GatewayTopicKind.STATUS), b"online"),
        )
        self._links = [registry_link, self._ingest]
        ingest = self._ingest
        self.metrics.pending.set_function(lambda: ingest.unacked)
        state_link = None
        if cfg.share_group:
            state_link = MqttLink(
                mqtt,
                client_id=f"{cfg.client_id}-state",
                subscriptions=[(DEVICE_TREE, 1)],
                clean_session=True,
                manual_ack=False,
                max_pending=cfg.max_pending,
            )
            self._links.append(state_link)
        for link in self._links:
            link.start()
        log.info(
            "gateway started",
            broker=mqtt.url,
            backend=self.settings.storage.backend,
            client_id=cfg.client_id,
            share_group=cfg.share_group or None,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow_registry(registry_link))
                tasks.create_task(self._consume(self._ingest))
                tasks.create_task(self._supervise())
                tasks.create_task(self._report())
                tasks.create_task(self._track_ready())
                tasks.create_task(self._housekeeping())
                tasks.create_task(self._rollups())
                if state_link:
                    tasks.create_task(self._follow_state(state_link))
                if self.influx:
                    tasks.create_task(self.influx.run_drainer())
        finally:
            for link in self._links:
                await link.stop()
            if self.influx:
                await self.influx.close()
            await self.embedded.close()
            if metrics_server is not None:
                metrics_server.shutdown()
            log.info("gateway stopped")

    # --- registry -------------------------------------------------------------

    async def _follow_registry(self, link: MqttLink) -> None:
        while True:
            # Only the newest registry matters.
            item = (await link.next_batch(1000))[-1]
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
            devices = set(self.tracker.device_room)
            self.budget.forget(devices)
            self.call_budget.forget(devices)
            for room in removed:
                self._publish_raw(room_state_topic(room), b"")
            await self._store_retrying(functools.partial(self.devices.forget_room_states, removed))
            await self._publish_states(changed)
            log.info(
                "registry applied",
                version=registry.version,
                rooms=len(registry.rooms),
                changed=len(changed),
                removed=len(removed),
            )
            first = not self.registry_ready.is_set()
            self.registry_ready.set()
            if first:
                # The connect came before the registry, so nothing was re-asserted
                # then; a broker restored from an old autosave holds stale states.
                self._republish_all()

    async def _wait_for_registry(self) -> None:
        # Until the registry is known, a device cannot be mapped to a room;
        # messages wait unacknowledged at the broker rather than being refused.
        while not self.registry_ready.is_set():
            try:
                await asyncio.wait_for(self.registry_ready.wait(), timeout=15)
            except TimeoutError:
                log.warning(
                    "still waiting for the room registry; is the server running?",
                    topic=REGISTRY_TOPIC,
                )

    # --- ingest ---------------------------------------------------------------

    async def _consume(self, link: MqttLink) -> None:
        """Two stages with a bounded queue between them: decoding batch N+1
        overlaps with writing batch N (SQLite and HTTP release the GIL)."""
        await self._wait_for_registry()
        decoded: asyncio.Queue[Decoded] = asyncio.Queue(maxsize=2)

        async def decode_stage() -> None:
            while True:
                batch = await link.next_batch(self.settings.gateway.batch_size)
                await decoded.put(self._decode_batch(batch))

        async def commit_stage() -> None:
            while True:
                await self._commit_batch(link, await decoded.get())

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(decode_stage())
            tasks.create_task(commit_stage())

    def _decode_batch(self, batch: list[Inbox]) -> Decoded:
        """Validate, enrich and budget; count and log rejects. No I/O."""
        out = Decoded(batch, self.clock())
        records = out.records
        place_of, now, mono = self.tracker.place_of, out.now, self.mono()
        take, take_call = self.budget.take, self.call_budget.take
        for item in batch:
            if item.dup:
                self.metrics.redelivered.inc()
            try:
                inbound = decode(item.topic, item.payload, retained=item.retained)
            except ContractError as exc:
                self._reject(item, exc.reason, exc.detail)
                continue
            except Exception as exc:  # a bug must not stop ingest: set it aside
                log.exception(
                    "message broke the decoder; kept as a dead letter", topic=item.topic[:120]
                )
                out.dead.append(
                    NewDeadLetter(
                        "gateway",
                        f"decode: {exc!r}",
                        None,
                        item.topic[:200],
                        repr(item.payload[:4096]),
                    )
                )
                continue
            if inbound is None:
                continue
            place = place_of(inbound.device)
            if place is None:
                self._reject(item, RejectReason.UNKNOWN_DEVICE, "not in the registry")
                out.unknown.append((inbound.device, item.topic))
            elif isinstance(inbound, StatusUpdate):
                out.statuses.append((inbound, place[0]))
            elif not (take_call if inbound.kind is Kind.CALL else take)(inbound.device, mono):
                self._rate_limited(item, inbound.device, inbound.kind)
            else:
                room, building, floor = place
                rec = Record(
                    inbound.device, room, inbound.kind, inbound.message, now, building, floor
                )
                records.append(rec)
                if inbound.message.ts is not None and rec.ts_flagged:
                    self._flag_ts(rec)
        # Counted once per batch (Counter counts in C), not per message.
        for kind, n in Counter(rec.kind for rec in records).items():
            self.metrics.received.labels(kind.value).inc(n)
        if out.statuses:
            self.metrics.received.labels(Kind.STATUS.value).inc(len(out.statuses))
        return out

    def _warn_once(self, device: str, what: str) -> bool:
        """True at most once per device, what, and WARN_EVERY_MS: a flooding
        or misconfigured node must not flood the log too."""
        now = self.mono()
        last = self._warned.get((device, what))
        if last is not None and now - last < WARN_EVERY_MS:
            return False
        if len(self._warned) > 100_000:
            self._warned.clear()
        self._warned[(device, what)] = now
        return True

    def _flag_ts(self, rec: Record) -> None:
        self.metrics.flagged.labels(TS_OUT_OF_RANGE).inc()
        if self._warn_once(rec.device, TS_OUT_OF_RANGE):
            log.warning(
                "device clock out of range; message dated by its arrival",
                device=rec.device,
                ts=rec.message.ts,
                received_ms=rec.received_ms,
            )

    def _rate_limited(self, item: Inbox, device: str, kind: Kind) -> None:
        self.metrics.rejected.labels(RejectReason.RATE_LIMITED.value).inc()
        self.metrics.rate_limited.labels(device).inc()
        if self._warn_once(device, RejectReason.RATE_LIMITED.value):
            log.warning(
                "message rejected",
                reason=RejectReason.RATE_LIMITED.value,
                topic=item.topic[:120],
                device=device,
                kind=kind.value,
                detail="over the device's message budget; further drops of this "
                "device are counted, not logged, for a minute",
            )

    async def _commit_batch(self, link: MqttLink, batch: Decoded) -> None:
        """Store, derive room state, publish, then acknowledge: in that order."""
        now = batch.now
        changed: list[RoomState] = []
        for device, topic in batch.unknown:
            await self._store_retrying(
                functools.partial(self.devices.note_unknown_device, device, topic, now)
            )
        for status, room in batch.statuses:
            live = not status.retained
            await self._store_retrying(
                functools.partial(
                    self.devices.note_status, status.device, room, status.status, now, live=live
                )
            )
            changed += self.tracker.on_status(status.device, status.status, live=live, now_ms=now)
        if batch.dead:
            await self._set_aside(batch.dead)
        records = batch.records
        if records:
            started = time.perf_counter()
            dead: list[Record] = []
            fresh = await self._write_isolating(records, dead)
            self.metrics.write_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(records))
            new = [rec for rec, is_new in zip(records, fresh, strict=True) if is_new]
            self.metrics.duplicates.inc(len(records) - len(new) - len(dead))
            if new and self.influx:  # the embedded series did this in its own write
                await self._store_retrying(functools.partial(self.devices.note_messages, new))
            for kind, n in Counter(rec.kind.value for rec in new).items():
                self.metrics.stored.labels(kind).inc(n)
            # A dead letter is still a valid message from the node: a sign of life.
            for rec in new + dead:
                try:
                    changed += self.tracker.on_message(rec.device, rec.message, rec.time_ms, now)
                except Exception:  # never let one message stop the commit stage
                    log.exception("room state not derived from a message", device=rec.device)
        await self._publish_states(changed)
        link.ack_all(batch.items)

    async def _write_isolating(self, records: list[Record], dead: list[Record]) -> list[bool]:
        """Write a batch; if the backend refuses it (or it breaks the write),
        halve it until the records at fault are found, set them aside as dead
        letters (appended to `dead`, False in the result) and write the rest.
        Transient failures (StorageError) are retried as always."""
        try:
            return await self._store_retrying(functools.partial(self.series.write, records))
        except Exception as exc:  # RefusedError, or a bug (OverflowError, ValueError, ...)
            if len(records) > 1:
                half = len(records) // 2
                return await self._write_isolating(
                    records[:half], dead
                ) + await self._write_isolating(records[half:], dead)
            [rec] = records
            log.error(
                "record refused by storage; kept as a dead letter",
                device=rec.device,
                kind=rec.kind.value,
                error=str(exc)[:300],
            )
            await self._set_aside(
                [
                    NewDeadLetter(
                        "gateway",
                        f"{type(exc).__name__}: {exc}",
                        rec.device,
                        device_topic(rec.device, rec.kind),
                        json.dumps(
                            {
                                "record": {"room": rec.room, "received_ms": rec.received_ms},
                                "message": rec.message.model_dump(mode="json"),
                            }
                        ),
                    )
                ]
            )
            dead.append(rec)
            return [False]

    async def _set_aside(self, letters: list[NewDeadLetter]) -> None:
        try:
            await self._store_retrying(
                functools.partial(self.embedded.dead_letters.add, letters, self.clock())
            )
        except Exception:  # the last resort: the log, never a wedged commit stage
            for letter in letters:
                log.exception(
                    "dead letter not kept; logged instead",
                    reason=letter.reason,
                    device=letter.device,
                    payload=letter.payload[:4096],
                )
        await self._count_dead_letters()

    async def _count_dead_letters(self) -> None:
        count = 0
        with contextlib.suppress(StorageError):
            count = await self.embedded.dead_letters.count_open()
            if self.influx:
                count += (await self.influx.stats()).refused
        self.metrics.dead_letters.set(count)

    def _reject(self, item: Inbox, reason: RejectReason, detail: str) -> None:
        self.metrics.rejected.labels(reason.value).inc()
        log.warning(
            "message rejected",
            reason=reason.value,
            topic=item.topic[:120],
            detail=detail[:200],
            size=len(item.payload),
        )

    async def _store_retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Retry a storage call until it works: the messages stay unacknowledged
        meanwhile, so the broker holds them and nothing is lost."""
        delay = 0.5
        while True:
            try:
                return await op()
            except RefusedError:
                raise  # the data's fault: retrying cannot help (_write_isolating)
            except StorageError as exc:
                self.metrics.storage_errors.inc()
                log.error("storage write failed; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30)

    async def _follow_state(self, link: MqttLink) -> None:
        """Shared mode: every device message (not just this gateway's share)
        feeds room state; storage and rejects are the ingest path's job."""
        await self._wait_for_registry()
        while True:
            changed: list[RoomState] = []
            for item in await link.next_batch(self.settings.gateway.batch_size):
                now = self.clock()
                try:
                    inbound = decode(item.topic, item.payload, retained=item.retained)
                    if inbound is None or self.tracker.room_of(inbound.device) is None:
                        continue
                    if isinstance(inbound, StatusUpdate):
                        changed += self.tracker.on_status(
                            inbound.device,
                            inbound.status,
                            live=not inbound.retained,
                            now_ms=now,
                        )
                    else:
                        msg = inbound.message
                        changed += self.tracker.on_message(
                            inbound.device, msg, message_time(msg.ts, now), now
                        )
                except ContractError:
                    continue
                except Exception:  # one message must not stop room states for all
                    log.exception("room state not derived from a message", topic=item.topic[:120])
            await self._publish_states(changed)

    # --- room states -------------------------------------------------------------

    async def _supervise(self) -> None:
        """The supervision window, on monotonic time (asyncio's sleep is, and
        so is the tracker's window); a wall-clock step is noticed here, logged,
        and the kept wall times are moved with it."""
        period = min(5.0, self.settings.gateway.supervision_s / 10)
        await self._wait_for_registry()
        while True:
            await asyncio.sleep(period)
            now = self.clock()
            step = self.steps.check()
            if step:
                self.metrics.clock_steps.inc()
                log.warning(
                    "wall clock stepped; supervision is unaffected (monotonic), "
                    "kept times moved with the step",
                    step_s=round(step / 1000, 3),
                )
                await self._publish_states(self.tracker.clock_stepped(step, now))
            await self._publish_states(self.tracker.tick(now))

    async def _publish_states(self, states: list[RoomState]) -> None:
        if not states:
            return
        latest = {s.room: s for s in states}  # a batch may change a room twice
        await self._store_retrying(
            functools.partial(
                self.devices.save_room_states, self.tracker.rows(list(latest.values()))
            )
        )
        # One level check per batch: a call that is filtered out still costs
        # structlog's processor chain, per message under load.
        # Every change at debug: 190 rooms make hundreds a minute at start and
        # scroll everything else away. A room going dead (silent, last will)
        # is news for an operator: info. A summary comes every minute (_report).
        logged = log.is_enabled_for(logging.DEBUG)
        for state in latest.values():
            self._publish_raw(self._state_topic(state.room), dumps(state))
            if state.state is RoomStateName.OFFLINE and state.reason in (
                "silent",
                "device_offline",
            ):
                log.info("room offline", room=state.room, reason=state.reason, device=state.device)
            elif logged:
                log.debug(
                    "room state",
                    room=state.room,
                    state=state.state.value,
                    reason=state.reason,
                    device=state.device,
                )
        self.state_changes += len(latest)
        self.metrics.room_states.inc(len(latest))

    def _state_topic(self, room: str) -> str:
        """`room_state_topic`, validated once per room rather than per change."""
        topic = self._state_topics.get(room)
        if topic is None:
            topic = self._state_topics[room] = room_state_topic(room)
        return topic

    def _publish_raw(self, topic: str, payload: bytes) -> None:
        assert self._ingest is not None
        self._ingest.publish(topic, payload, qos=1, retain=True)

    def _republish_all(self) -> None:
        """After a (re)connect, re-assert every room's retained state: a broker
        that restarted without persistence has forgotten them."""
        if not self.registry_ready.is_set():
            return
        for state in self.tracker.all_states():
            self._publish_raw(self._state_topic(state.room), dumps(state))

    # --- observability and housekeeping -------------------------------------------

    def _influx_batch(self, size: int, seconds: float) -> None:
        self.metrics.influx_batch_size.observe(size)
        self.metrics.influx_write_seconds.observe(seconds)

    async def _track_ready(self) -> None:
        assert self._ingest is not None
        while True:
            ready = self._ingest.connected.is_set() and self.registry_ready.is_set()
            self.metrics.ready.set(1 if ready else 0)
            await asyncio.sleep(0.5)

    async def _report(self) -> None:
        """Spool gauges, and a retained summary for the server's /metrics."""
        topic = gateway_topic(self.settings.gateway.client_id, GatewayTopicKind.STATS)
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        while True:
            if self.influx:
                with contextlib.suppress(StorageError):
                    stats = await self.influx.stats()
                    self.metrics.spool_depth.set(stats.depth)
                    self.metrics.spool_age.set(stats.oldest_age_s)
                    self.metrics.refused.set(stats.refused)
            await self._count_dead_letters()
            if self._ingest is not None and self._ingest.connected.is_set():
                self._ingest.publish(topic, dumps(self.metrics.summary()), qos=0, retain=True)
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_EVERY_S
                self._log_summary()
            await asyncio.sleep(STATS_EVERY_S)

    def _log_summary(self) -> None:
        """One line a minute: how the rooms stand, and how busy it was."""
        counts = Counter(d.state.value for d, _ in self.tracker.published.values())
        log.info(
            "rooms",
            free=counts.get("free", 0),
            occupied=counts.get("occupied", 0),
            offline=counts.get("offline", 0),
            changes=self.state_changes,
        )
        self.state_changes = 0

    async def _rollups(self) -> None:
        """Keep the last day's hourly rollups fresh (late or spooled data included)."""
        while True:
            await asyncio.sleep(ROLLUP_EVERY_S)
            end = self.clock() // HOUR_MS * HOUR_MS
            try:
                rows = await refresh_rollups(self.series, end - ROLLUP_LOOKBACK_H * HOUR_MS, end)
                log.debug("rollups refreshed", rows=rows)
            except StorageError as exc:
                log.warning("rollups not refreshed; will retry", error=str(exc))

    async def _housekeeping(self) -> None:
        """Retention of raw telemetry, and the dedupe ledger's window."""
        storage = self.settings.storage
        while True:
            now = self.clock()
            try:
                if self.influx:
                    forgotten = await self.influx.spool.forget_before(
                        now - storage.dedupe_window_days * 86_400_000
                    )
                    log.info("dedupe ledger pruned", entries=forgotten)
                else:
                    pruned = await self.embedded.series.prune_telemetry(
                        now - storage.telemetry_retention_days * 86_400_000
                    )
                    log.info("telemetry retention applied", rows_deleted=pruned)
            except StorageError as exc:
                log.error("housekeeping failed; will retry", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_EVERY_S)


async def run_gateway(settings: Settings) -> None:
    gateway = Gateway(settings)
    with contextlib.suppress(asyncio.CancelledError):
        await gateway.run()
