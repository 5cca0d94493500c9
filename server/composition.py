"""The server's composition root: every service built and wired here, in
one place, in the order a call flows; every one closed on the way out.

Read `build` top to bottom to follow an emergency call:

1. the node's call arrives on MQTT (`ServerMqtt`, calls subscription);
2. `AlertService.on_call` journals and stores it, one open call per room;
3. its change goes out to: the node (`ServerMqtt.send_call_ack`: "received"),
   the staff consoles (`Fanout`), the escalator (woken at once);
4. the `Escalator` pages tier by tier over the paging channels
   (`paging/registry.py`), and each page's outcome comes back to the alert.

Lifetimes are owned by one `AsyncExitStack`: each part's close is pushed
as the part is opened, so a start-up that fails half-way closes what it had
opened, and at shutdown every part is closed, in reverse order, even when
one of them fails to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from mamaroom.config import Settings
from mamaroom.logs import get_logger
from mamaroom.site import read_site_file
from mamaroom.storage import StorageError
from mamaroom.storage.stores import open_stores
from paging.registry import build_channels
from server.api.pages import public_url, staff_url
from server.context import ServerContext
from server.database import ServerDatabase
from server.mqtt_link import ServerMqtt
from server.notify.wiring import call_text, channel_wiring, page_recorder
from server.services.accounts import LoginLimiter
from server.services.alerts import AlertService, present
from server.services.call_journal import CallJournal
from server.services.escalation import Escalator, pages_push, paging_gaps
from server.services.fanout import Fanout
from server.services.outages import OutageWatch
from server.services.registry import RegistryService
from server.services.retention import Retention, reminders
from server.services.retention import alerts as retention_alerts
from server.services.retention import wechat as retention_wechat
from server.services.rooms import LiveRooms
from server.services.roster import Roster
from server.services.site import SiteService
from server.services.trends import TrendsService
from server.services.waits import WaitPredictor
from server.services.webpush import WebPush
from server.services.wechat import WechatService
from server.services.welfare import WelfareCheck

log = get_logger(__name__)
#: Opening hours change what `open_now` says; re-evaluate this often.
REFRESH_S = 30


async def build(settings: Settings, stack: contextlib.AsyncExitStack) -> ServerContext:
    """Open, wire and start every service of one server; `stack` closes them."""
    tz = ZoneInfo(settings.timezone)
    role = settings.server.role
    handles_calls = role != "web"

    # Storage: the server's database (several parts' tables, two connections:
    # server/database.py) and the time series.
    database = await _opened(stack, ServerDatabase(settings))
    db, alerts_db, accounts = database.registry, database.alerts, database.accounts
    # Reads and rollups only: an InfluxDB spool stays the gateway's (never opened).
    stores = open_stores(settings, gateway="server-trends", telemetry_retention=False)
    if stores.influx is not None:
        stack.push_async_callback(stores.influx.client.close)
    # Device state from store.sqlite (and its time series, on the embedded backend).
    embedded = await _opened(stack, stores.embedded)
    registry = RegistryService(db, settings.rooms_csv)
    current = await registry.load()

    # The call path: MQTT in → alerts → MQTT out (the node's lamp), consoles, escalation.
    alerts = AlertService(alerts_db, journal=CallJournal(settings.call_journal_path))
    await alerts.load()
    fanout = Fanout(settings.server.stream_queue)
    live = LiveRooms(tz, fanout)
    welfare = (
        WelfareCheck(alerts, settings.alerts.welfare_after_s)
        if settings.alerts.welfare_enabled and handles_calls
        else None
    )
    mqtt = ServerMqtt(
        settings.mqtt,
        settings.server.client_id,
        live,
        current,
        alerts,
        welfare,
        handles_calls=handles_calls,
        on_newer_registry=registry.refresh,
    )
    alerts.connect(mqtt.send_call_ack)  # a call's status back to its node
    alerts.connect_peers(mqtt.tell_peers)  # and to the other servers' consoles
    alerts.on_change(lambda a: fanout.publish("alert", present(a), staff_only=True))
    # A room with an open call is not shown "free" to the public (issue 12).
    live.set_open_calls(alerts.open_rooms)
    alerts.on_change(lambda _alert: live.set_open_calls(alerts.open_rooms))
    await live.set_registry(current)
    registry.on_change(live.set_registry)
    registry.on_change(mqtt.publish_registry)

    escalator = Escalator(
        alerts_db,
        settings.escalation,
        tz,
        registry.find,
        call_text,
        on_paged=page_recorder(alerts),
        open_calls=alerts.calls_to_page,
        on_nobody=alerts.note_nobody,
        set_escalation=alerts.set_escalation,
        lease=functools.partial(alerts_db.lease, "escalation", settings.server.client_id),
    )
    channels = (
        build_channels(
            settings, channel_wiring(alerts, database.push, f"{staff_url(settings)}/staff")
        )
        if handles_calls
        else {}
    )
    if handles_calls:
        alerts.on_change(lambda a: escalator.wake() if a["kind"] == "call" else None)
        for gap in paging_gaps(settings.escalation, channels):
            # Chosen on purpose (paging.allow_no_target: a demo): said once, quietly.
            log.log(
                20 if settings.paging.allow_no_target else 30, "paging configuration", problem=gap
            )
        for channel in channels.values():
            channel.start()
            # A channel's stop joins its worker thread: off the event loop.
            stack.push_async_callback(asyncio.to_thread, channel.stop)
            escalator.add_channel(channel)

    # The pages' services: site layout, wait estimates, roster, Web Push, trends.
    roster = Roster(database.roster, settings.escalation)
    await roster.load()
    site = SiteService(read_site_file(settings.pages.site_file), settings.pages.near_minutes)
    waits = WaitPredictor(stores.series, settings.pages.wait_history_days)
    push = WebPush(
        database.push,
        settings.pages,
        public_url(settings),
        lambda room_id: _room_name(registry, room_id),
        staff_url=staff_url(settings),
        # Tiers that page Web Push themselves replace the push of every call.
        staff_calls=not pages_push(settings.escalation),
    )
    # The park's WeChat service account: reminders as subscription messages.
    # Not in a `calls` server: nothing of the mothers' pages is near the call path.
    wechat = WechatService(settings.wechat, database.wechat, public_url(settings), tz)
    stack.push_async_callback(wechat.close)
    trends = TrendsService(
        settings,
        stores.series,
        database.trend_calls,
        lambda: registry.current.rooms,
    )

    # Privacy by default: lapsed reminders and old alert timelines are deleted
    # (docs/privacy.md). Every server applies it; deleting twice deletes nothing.
    retention = Retention(
        settings.retention,
        [
            reminders(push.db),
            retention_wechat(database.wechat, "wechat_reminders"),
            retention_wechat(database.wechat, "wechat_sessions"),
            retention_alerts(alerts_db, settings.retention),
        ],
    )

    # Device-outage alerts come from the server that handles calls.
    outages = OutageWatch(live, alerts, settings.alerts) if handles_calls else None
    tasks = [
        mqtt.run(),
        fanout.keepalive(),
        alerts.run(),
        _refresh(settings, live, outages),
        watch_wall_clock(),
        waits.warm(),
        retention.run(),
    ]
    if handles_calls:
        tasks.append(escalator.run())
    if push.enabled:
        tasks.append(push.run(fanout))
        log.info("web push on")
    if wechat.enabled and role != "calls":
        tasks.append(wechat.run(fanout))
        log.info("wechat on", app_id=settings.wechat.app_id, api=settings.wechat.api_base_url)
    _start(stack, tasks)
    stack.push_async_callback(mqtt.say_offline)  # before the tasks stop (LIFO)
    log.info(
        "server started",
        role=role,
        rooms=len(current.rooms),
        broker=settings.mqtt.url,
        paging=sorted(channels),
    )
    return ServerContext(
        settings=settings,
        db=db,
        devices=embedded.devices,
        audit_path=stores.audit_path,
        registry=registry,
        rooms=live,
        mqtt=mqtt,
        alerts=alerts,
        accounts=accounts,
        login_limiter=LoginLimiter(settings.auth),
        fanout=fanout,
        escalator=escalator,
        roster=roster,
        site=site,
        waits=waits,
        push=push,
        wechat=wechat,
        trends=trends,
    )


class _Closes(Protocol):
    """What `_opened` accepts: a part with an async open and close."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


P = TypeVar("P", bound=_Closes)


async def _opened(stack: contextlib.AsyncExitStack, part: P) -> P:
    await part.open()
    stack.push_async_callback(part.close)
    return part


def _start(stack: contextlib.AsyncExitStack, coros: list[Coroutine[Any, Any, None]]) -> None:
    tasks = [asyncio.create_task(c) for c in coros]

    async def cancel() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    stack.push_async_callback(cancel)


def _room_name(registry: RegistryService, room_id: str) -> str:
    room = registry.find(room_id)
    return room.name if room else room_id


async def _refresh(settings: Settings, live: LiveRooms, outages: OutageWatch | None) -> None:
    while True:
        await asyncio.sleep(min(REFRESH_S, settings.alerts.device_offline_after_s / 4))
        # One failed round must never end the task: opening hours and
        # outage alerts would silently stop for good.
        try:
            live.refresh()
            if outages is not None:
                await outages.check()
        except StorageError as exc:
            log.error("device-outage check failed; will retry", error=str(exc))
        except Exception:
            log.exception("room refresh failed; will retry")


async def watch_wall_clock(every_s: float = 5.0, tolerance_s: float = 2.0) -> None:
    """Log a step of the wall clock (NTP, a wrong RTC, an operator). Timers
    run on the monotonic clock and do not care; timestamps shown to people do."""
    wall, mono = time.time(), time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        new_wall, new_mono = time.time(), time.monotonic()
        step = (new_wall - wall) - (new_mono - mono)
        if abs(step) > tolerance_s:
            log.warning(
                "wall clock stepped; timers are unaffected (monotonic), times "
                "stamped on alerts jump by the step",
                step_s=round(step, 1),
            )
        wall, mono = new_wall, new_mono
