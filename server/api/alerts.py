"""Alerts for staff: list, one with its timeline, acknowledge, resolve."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from server.context import Ctx
from server.security import StaffUser, require
from server.services.alert_model import AlertKind, AlertOut, AlertStatus
from server.services.alerts import present

router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[Depends(require("staff"))])

# SQLite's INTEGER is 64-bit: a larger id is a 422, not an OverflowError (500).
# Negative ids are provisional alerts: calls kept in the journal while the
# database refused writes (server/services/alerts.py).
AlertId = Annotated[int, Path(ge=-(2**31), le=2**63 - 1)]


@router.get("", response_model=list[AlertOut])
async def list_alerts(
    ctx: Ctx,
    status: AlertStatus | None = None,
    kind: AlertKind | None = None,
    limit: int = Query(500, ge=1, le=10_000, description="newest first, at most this many"),
) -> list[dict[str, Any]]:
    return [present(a) for a in await ctx.alerts.query(status=status, kind=kind, limit=limit)]


@router.get(
    "/{alert_id}", response_model=AlertOut, responses={404: {"description": "No such alert"}}
)
async def get_alert(ctx: Ctx, alert_id: AlertId) -> dict[str, Any]:
    return present(await ctx.alerts.get(alert_id))


@router.post(
    "/{alert_id}/ack", response_model=AlertOut, responses={404: {"description": "No such alert"}}
)
async def acknowledge(ctx: Ctx, alert_id: AlertId, user: StaffUser) -> dict[str, Any]:
    return present(await ctx.alerts.acknowledge(alert_id, who=user.name))


@router.post(
    "/{alert_id}/resolve",
    response_model=AlertOut,
    responses={404: {"description": "No such alert"}},
)
async def resolve(ctx: Ctx, alert_id: AlertId, user: StaffUser) -> dict[str, Any]:
    return present(await ctx.alerts.resolve(alert_id, who=user.name))
