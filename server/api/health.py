"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
import shutil

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from mamaroom.contract import GatewayStats, RoomStateName
from mamaroom.storage import StorageError
from server.api.devices import loss_audit
from server.context import Ctx
from server.mqtt_link import GatewayView

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (it may still be waiting for the broker)."""
    return {"status": "ok"}


#: Below this much free space on the data disk (or a tenth of a smaller
#: disk), the server is not ready: the next commits are about to fail.
LOW_DISK_BYTES = 64 * 1024 * 1024


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "Broker or storage unreachable, "
            "the database refuses writes, or the "
            "data disk is nearly full"
        }
    },
)
async def readyz(ctx: Ctx) -> JSONResponse:
    """Ready to take calls: broker connected, storage readable, the alerts
    database takes a real write (a `SELECT 1` passes on a full disk), the data
    disk has room, and no call waits in the journal for the database."""
    checks: dict[str, str] = {"broker": "ok" if ctx.mqtt.connected.is_set() else "unreachable"}
    for name, db in (("storage", ctx.devices), ("database", ctx.db)):
        try:
            await db.ping()
            checks[name] = "ok"
        except StorageError as exc:
            checks[name] = f"error: {exc}"
    try:
        await ctx.alerts.probe_write()
        checks["database_write"] = "ok"
    except StorageError as exc:
        checks["database_write"] = f"error: {exc}"
    try:
        usage = await asyncio.to_thread(shutil.disk_usage, ctx.settings.data_dir)
        free = usage.free
        checks["disk"] = (
            "ok"
            if free >= min(LOW_DISK_BYTES, usage.total // 10)
            else (f"low: {free // (1024 * 1024)} MiB free in {ctx.settings.data_dir}")
        )
    except OSError as exc:
        checks["disk"] = f"error: {exc}"
    if not ctx.mqtt.calls_taken():
        # A `web` server: calls are taken by another process (server.role =
        # calls); without one, nobody acknowledges or pages a press.
        heard = ", ".join(ctx.mqtt.calls_servers()) or "none heard of"
        checks["calls_server"] = f"no server that takes calls is online ({heard})"
    pending = ctx.alerts.provisional_count()
    checks["call_journal"] = (
        "ok" if not pending else (f"{pending} call(s) not yet committed to the database")
    )
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def _gateway_summary(reg: CollectorRegistry, gateways: dict[str, GatewayView]) -> None:
    """Each gateway's own summary (retained on mr/v1/gateway/{id}/stats)."""
    up = Gauge(
        "mamaroom_gateway_up",
        "1 while the gateway's MQTT session is alive",
        ["gateway"],
        registry=reg,
    )
    # Each single figure as mamaroom_gateway_<name>{gateway}; the counts by reason
    # as mamaroom_gateway_rejected / _flagged{gateway,reason}.
    figures = {
        key: Gauge(f"mamaroom_gateway_{key}", help_, ["gateway"], registry=reg)
        for key, help_ in GatewayStats.figures().items()
    }
    rejected = Gauge(
        "mamaroom_gateway_rejected",
        "Messages refused, by reason",
        ["gateway", "reason"],
        registry=reg,
    )
    flagged = Gauge(
        "mamaroom_gateway_flagged",
        "Messages kept but flagged (e.g. a device time out of range), by reason",
        ["gateway", "reason"],
        registry=reg,
    )
    for name, entry in gateways.items():
        up.labels(name).set(1 if entry.up else 0)
        stats = entry.stats
        if stats is None:
            continue
        for key, gauge in figures.items():
            value = getattr(stats, key)
            if value is not None:
                gauge.labels(name).set(value)
        for reason, count in stats.rejected.items():
            rejected.labels(name, reason).set(count)
        for reason, count in stats.flagged.items():
            flagged.labels(name, reason).set(count)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(ctx: Ctx) -> PlainTextResponse:
    """Prometheus text format."""
    reg = CollectorRegistry()
    rooms = Gauge("mamaroom_rooms", "Rooms by public state", ["state"], registry=reg)
    for state in RoomStateName:
        rooms.labels(state.value).set(len(ctx.rooms.query(state=state)))
    Gauge("mamaroom_stream_clients", "Open SSE connections", registry=reg).set(
        ctx.fanout.client_count
    )
    Gauge("mamaroom_broker_connected", "1 when the server's MQTT link is up", registry=reg).set(
        1 if ctx.mqtt.connected.is_set() else 0
    )
    Gauge("mamaroom_registry_version", "Room registry version", registry=reg).set(
        ctx.registry.current.version
    )
    Gauge(
        "mamaroom_calls_journalled",
        "Calls kept in the call journal because the database refused them, not yet committed",
        registry=reg,
    ).set(ctx.alerts.provisional_count())
    _gateway_summary(reg, ctx.mqtt.gateways)
    try:
        lost = sum(g.lost for g in await loss_audit(ctx))
    except StorageError:  # an unreadable audit must not take /metrics down
        lost = -1
    Gauge(
        "mamaroom_messages_lost",
        "Device messages missing from storage, counted from seq gaps (-1: audit unreadable)",
        registry=reg,
    ).set(lost)
    return PlainTextResponse(
        generate_latest(reg).decode(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
