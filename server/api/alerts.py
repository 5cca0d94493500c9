"""Alerts for staff: list, one with its timeline, acknowledge, resolve."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path

from server.context import Ctx
from server.security import StaffUser, require

router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[Depends(require("staff"))])

Status = Literal["open", "acknowledged", "arrived", "resolved", "cancelled"]
# SQLite's INTEGER is 64-bit: a larger id is a 422, not an OverflowError (500).
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _with_response_times(alert: dict[str, Any]) -> dict[str, Any]:
    raised = alert["raised_at_ms"]
    alert["response_s"] = {
        step: (alert[f"{step}_at_ms"] - raised) / 1000 if alert[f"{step}_at_ms"] else None
        for step in ("acknowledged", "arrived", "resolved")}
    return alert


@router.get("")
async def list_alerts(ctx: Ctx, status: Status | None = None,
                      kind: str | None = None) -> list[dict[str, Any]]:
    return [_with_response_times(a) for a in await ctx.alerts.query(status=status, kind=kind)]


@router.get("/{alert_id}", responses={404: {"description": "No such alert"}})
async def get_alert(ctx: Ctx, alert_id: AlertId) -> dict[str, Any]:
    return _with_response_times(await ctx.alerts.get(alert_id))


@router.post("/{alert_id}/ack", responses={404: {"description": "No such alert"}})
async def acknowledge(ctx: Ctx, alert_id: AlertId, user: StaffUser) -> dict[str, Any]:
    return _with_response_times(await ctx.alerts.acknowledge(alert_id, who=user.name))


@router.post("/{alert_id}/resolve", responses={404: {"description": "No such alert"}})
async def resolve(ctx: Ctx, alert_id: AlertId, user: StaffUser) -> dict[str, Any]:
    return _with_response_times(await ctx.alerts.resolve(alert_id, who=user.name))
