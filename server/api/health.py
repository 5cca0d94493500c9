"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from mamaroom.contract import RoomStateName
from mamaroom.storage import StorageError
from server.context import Ctx

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (it may still be waiting for the broker)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Broker or storage unreachable"}})
async def readyz(ctx: Ctx) -> JSONResponse:
    """Ready to serve live data: broker connected and storage reachable."""
    checks: dict[str, str] = {"broker": "ok" if ctx.mqtt.connected.is_set() else "unreachable"}
    for name, db in (("storage", ctx.store), ("database", ctx.db)):
        try:
            await db.ping()
            checks[name] = "ok"
        except StorageError as exc:
            checks[name] = f"error: {exc}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(ctx: Ctx) -> PlainTextResponse:
    """Prometheus text format."""
    reg = CollectorRegistry()
    rooms = Gauge("mamaroom_rooms", "Rooms by public state", ["state"], registry=reg)
    for state in RoomStateName:
        rooms.labels(state.value).set(len(ctx.rooms.query(state=state)))
    Gauge("mamaroom_stream_clients", "Open SSE connections", registry=reg).set(
        ctx.rooms.subscriber_count)
    Gauge("mamaroom_broker_connected", "1 when the server's MQTT link is up", registry=reg).set(
        1 if ctx.mqtt.connected.is_set() else 0)
    Gauge("mamaroom_registry_version", "Room registry version", registry=reg).set(
        ctx.registry.current.version)
    return PlainTextResponse(generate_latest(reg).decode(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
