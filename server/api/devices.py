"""Device health for staff: every node's last word, and devices to adopt."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from mamaroom.clock import from_ms
from mamaroom.storage import StorageError
from mamaroom.storage.seq_audit import SeqGap, lost_by_device, read_gaps_file
from server.context import Ctx, ServerContext
from server.security import require

router = APIRouter(prefix="/api", tags=["devices"], dependencies=[Depends(require("staff"))])


class DeviceHealth(BaseModel):
    device: str
    room: str | None
    status: str | None
    last_seen: datetime | None
    rssi: int | None
    heap_free: int | None
    fw: str | None
    uptime_s: int | None
    reboots: int
    reset_reason: str | None
    #: Messages that never reached storage, counted from gaps in `seq` (all
    #: boots); null when the loss audit cannot be read.
    lost_messages: int | None = 0


class UnknownDevice(BaseModel):
    """Seen on the broker but not in the registry: assign it to a room to adopt it."""

    device: str
    first_seen: datetime
    last_seen: datetime
    messages: int


class Devices(BaseModel):
    devices: list[DeviceHealth]
    unknown: list[UnknownDevice]


async def loss_audit(ctx: ServerContext) -> list[SeqGap]:
    """The gateway's loss audit, where every device message meets: the
    embedded store, or the InfluxDB spool's dedupe ledger."""
    return await read_gaps_file(ctx.audit_path)


@router.get("/devices", response_model=Devices)
async def devices(ctx: Ctx) -> Devices:
    rows = await ctx.devices.devices()
    try:
        lost: dict[str, int] | None = lost_by_device(await loss_audit(ctx))
    except StorageError:
        lost = None  # health records are still worth showing without it
    unknown = await ctx.devices.unknown_devices()
    return Devices(
        devices=[
            DeviceHealth(
                device=d.device,
                room=d.room,
                status=d.status,
                last_seen=from_ms(d.last_seen_ms),
                rssi=d.rssi,
                heap_free=d.heap_free,
                fw=d.fw,
                uptime_s=d.uptime_s,
                reboots=max(d.boots - 1, 0),
                reset_reason=d.reset_reason,
                lost_messages=None if lost is None else lost.get(d.device, 0),
            )
            for d in rows
        ],
        unknown=[
            UnknownDevice(
                device=u["device"],
                first_seen=from_ms(u["first_seen_ms"]),
                last_seen=from_ms(u["last_seen_ms"]),
                messages=u["messages"],
            )
            for u in unknown
        ],
    )
