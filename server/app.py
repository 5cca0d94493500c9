"""Builds the FastAPI app: services started in the lifespan, thin routers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

import dashboard
from mamaroom.config import Settings
from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from mamaroom.storage.sqlite import SqliteStore
from paging.registry import build_channels
from server.alerts_db import AlertsDb
from server.api import admin, auth, devices, health, pages, public, rooms
from server.api import alerts as alerts_api
from server.api import firmware as firmware_api
from server.api import trends as trends_api
from server.body_limit import BodyLimit
from server.context import ServerContext
from server.db import ServerDb
from server.errors import ServerError
from server.mqtt_link import ServerMqtt
from server.notify.wiring import call_text, link_watcher, page_recorder
from server.security import SecurityHeaders
from server.services.accounts import AccountsDb, LoginLimiter
from server.services.alerts import AlertService, present
from server.services.call_journal import CallJournal
from server.services.escalation import Escalator, paging_gaps
from server.services.fanout import Fanout
from server.services.outages import OutageWatch
from server.services.registry import RegistryService
from server.services.rooms import LiveRooms
from server.services.welfare import WelfareCheck

log = get_logger(__name__)
DASHBOARD = dashboard.ROOT
#: Opening hours change what `open_now` says; re-evaluate this often.
REFRESH_S = 30


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = ServerDb(settings.server_db_path)
        store = SqliteStore(settings.store_path)
        await db.open()
        await store.open()
        registry = RegistryService(db, settings.rooms_csv)
        current = await registry.load()
        alerts_db = AlertsDb(settings.server_db_path)
        await alerts_db.open()
        alerts = AlertService(alerts_db, journal=CallJournal(settings.call_journal_path))
        await alerts.load()
        fanout = Fanout(settings.server.stream_queue)
        alerts.on_change(lambda a: fanout.publish("alert", present(a), staff_only=True))
        live = LiveRooms(ZoneInfo(settings.timezone), fanout)
        live.set_open_calls(alerts.open_rooms)
        alerts.on_change(lambda _alert: live.set_open_calls(alerts.open_rooms))
        await live.set_registry(current)
        welfare = (WelfareCheck(alerts, settings.alerts.welfare_after_s)
                   if settings.alerts.welfare_enabled else None)
        mqtt = ServerMqtt(settings.mqtt, settings.server.client_id, live, current, alerts,
                          welfare)
        registry.on_change(live.set_registry)
        registry.on_change(mqtt.publish_registry)
        escalator = Escalator(alerts_db, settings.escalation, ZoneInfo(settings.timezone),
                              registry.find, call_text, on_paged=page_recorder(alerts),
                              open_calls=alerts.calls_to_page, on_nobody=alerts.note_nobody,
                              set_escalation=alerts.set_escalation,
                              lease=functools.partial(alerts_db.lease, "escalation",
                                                      settings.server.client_id))
        alerts.on_change(lambda a: escalator.wake() if a["kind"] == "call" else None)
        channels = build_channels(settings.paging, link_watcher(alerts))
        for gap in paging_gaps(settings.escalation, channels):
            # Chosen on purpose (paging.allow_no_target: a demo): said once, quietly.
            log.log(20 if settings.paging.allow_no_target else 30, "paging configuration",
                    problem=gap)
        for channel in channels.values():
            channel.start()
            escalator.add_channel(channel)
        accounts = AccountsDb(settings.server_db_path, settings.auth)
        await accounts.open()
        app.state.ctx = ServerContext(settings, db, store, registry, live, mqtt, alerts,
                                      accounts, LoginLimiter(settings.auth), fanout)

        outages = OutageWatch(live, alerts, settings.alerts)

        async def refresh() -> None:
            while True:
                await asyncio.sleep(min(REFRESH_S, settings.alerts.device_offline_after_s / 4))
                # One failed round must never end the task: opening hours and
                # outage alerts would silently stop for good.
                try:
                    live.refresh()
                    await outages.check()
                except StorageError as exc:
                    log.error("device-outage check failed; will retry", error=str(exc))
                except Exception:
                    log.exception("room refresh failed; will retry")

        tasks = [asyncio.create_task(mqtt.run()), asyncio.create_task(refresh()),
                 asyncio.create_task(escalator.run()), asyncio.create_task(fanout.keepalive()),
                 asyncio.create_task(alerts.run()), asyncio.create_task(watch_wall_clock())]
        page_tasks, push_db = await pages.start(app, app.state.ctx)
        tasks += page_tasks
        tune_gc()
        log.info("server started", rooms=len(current.rooms), broker=settings.mqtt.url)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Each part is closed even if one before it fails to.
            closers: list[Callable[[], Awaitable[None]]] = [store.close, push_db.close,
                                                            alerts_db.close, accounts.close,
                                                            db.close]
            for channel in channels.values():
                closers.insert(0, functools.partial(asyncio.to_thread, channel.stop))
            for close in closers:
                try:
                    await close()
                except Exception:
                    log.exception("a part failed to close")
            log.info("server stopped")

    app = FastAPI(
        title="mamaroom",
        summary="Live occupancy of the park's nursing rooms (母婴室)",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN, which the
        # park's intranet may not reach; the schema itself is served.
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ServerError)
    async def server_error(_: Request, exc: ServerError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, default=settings.http.max_body_bytes,
                       larger={"/api/admin/rooms/import": settings.http.max_import_bytes})
    app.include_router(rooms.router)
    app.include_router(auth.router)
    app.include_router(devices.router)
    app.include_router(admin.router)
    app.include_router(alerts_api.router)
    app.include_router(health.router)
    app.include_router(trends_api.router)
    app.include_router(firmware_api.router)
    app.include_router(public.router)
    _mount_pages(app, DASHBOARD)
    pages.mount(app)
    return app


async def watch_wall_clock(every_s: float = 5.0, tolerance_s: float = 2.0) -> None:
    """Log a step of the wall clock (NTP, a wrong RTC, an operator). Timers
    run on the monotonic clock and do not care; timestamps shown to people do."""
    wall, mono = time.time(), time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        new_wall, new_mono = time.time(), time.monotonic()
        step = (new_wall - wall) - (new_mono - mono)
        if abs(step) > tolerance_s:
            log.warning("wall clock stepped; timers are unaffected (monotonic), times "
                        "stamped on alerts jump by the step", step_s=round(step, 1))
        wall, mono = new_wall, new_mono


def tune_gc() -> None:
    """Garbage collector settings for thousands of open streams.

    Each room change puts a few objects per stream client in flight for a
    fraction of a second (queue item, wake-up, ASGI messages). With CPython's
    default young generation (700 objects) they were promoted to the old
    generation again and again, and every few changes that triggered a full
    collection of every object of every connection: ~0.4 s at 5,000 streams
    (bench/sse_fanout.py, measured with gc.callbacks). A young generation of
    100,000 lets them die young; what startup built is frozen out of all
    collections. Only reference cycles wait longer to be freed."""
    gc.freeze()
    gc.set_threshold(100_000, 20, 10)


def _mount_pages(app: FastAPI, root: Path) -> None:
    app.mount("/static", StaticFiles(directory=root / "static"), name="static")
