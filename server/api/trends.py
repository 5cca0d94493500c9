"""The managers' trends (docs/trends.md): JSON for the charts, CSV for Excel."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import Response

from server.context import Ctx
from server.security import require
from server.services.trends import CsvLang, Range, RangeError, TrendsService, csv_rows

router = APIRouter(
    prefix="/api/trends", tags=["trends"], dependencies=[Depends(require("manager"))]
)


async def _service(ctx: Ctx) -> TrendsService:
    return ctx.trends


Service = Annotated[TrendsService, Depends(_service)]
Format = Literal["json", "csv"]


def _range(
    service: Service,
    first: Annotated[date | None, Query(alias="from")] = None,
    last: Annotated[date | None, Query(alias="to")] = None,
) -> Range:
    try:
        return service.range(first, last)
    except RangeError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


DateRange = Annotated[Range, Depends(_range)]
Building = Annotated[str | None, Query(description="only rooms of this building")]


def _csv(name: str, rng: Range, rows: list[list[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    # The BOM makes Excel read UTF-8 (Chinese names) instead of the locale's code page.
    return Response(
        ("\ufeff" + out.getvalue()).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="trends-{name}-'
            f'{rng.first.isoformat()}_{rng.last.isoformat()}.csv"'
        },
    )


Lang = Annotated[
    CsvLang,
    Query(description="the CSV's column names (and words such as weekdays) in English or Chinese"),
]


async def _answer(
    name: str,
    rng: Range,
    fmt: Format,
    compute: Callable[[], Awaitable[dict[str, Any]]],
    table: str = "days",
    lang: CsvLang = "en",
) -> dict[str, Any] | Response:
    data = await compute()
    if fmt == "csv":
        suffix = f"{name}-{table}" if name == "sessions" and table != "days" else name
        return _csv(suffix, rng, csv_rows(name, data, table, lang))
    return data


@router.get("/heatmap", response_model=None)
async def heatmap(
    service: Service,
    rng: DateRange,
    building: Building = None,
    days: Literal["all", "workdays", "offdays"] = "all",
    format: Format = "json",
    lang: Lang = "en",
) -> dict[str, Any] | Response:
    """Utilisation by weekday × hour, with China's holidays and make-up workdays."""
    return await _answer(
        "heatmap", rng, format, lambda: service.heatmap(rng, building, days), lang=lang
    )


@router.get("/rooms", response_model=None)
async def rooms(
    service: Service,
    rng: DateRange,
    building: Building = None,
    format: Format = "json",
    lang: Lang = "en",
) -> dict[str, Any] | Response:
    """Rooms ranked by utilisation, over- and under-used flagged."""
    return await _answer(
        "rooms", rng, format, lambda: service.rooms_ranked(rng, building), lang=lang
    )


@router.get("/sessions", response_model=None)
async def sessions(
    service: Service,
    rng: DateRange,
    building: Building = None,
    format: Format = "json",
    table: Literal["days", "lengths"] = "days",
    lang: Lang = "en",
) -> dict[str, Any] | Response:
    """Sessions per day and the session-length distribution."""
    return await _answer(
        "sessions", rng, format, lambda: service.sessions(rng, building), table, lang
    )


@router.get("/calls", response_model=None)
async def calls(
    service: Service,
    rng: DateRange,
    building: Building = None,
    format: Format = "json",
    lang: Lang = "en",
) -> dict[str, Any] | Response:
    """Call response times by month against the targets."""
    return await _answer("calls", rng, format, lambda: service.calls(rng, building), lang=lang)


@router.get("/uptime", response_model=None)
async def uptime(
    service: Service,
    rng: DateRange,
    building: Building = None,
    format: Format = "json",
    lang: Lang = "en",
) -> dict[str, Any] | Response:
    """Device uptime per node and room."""
    return await _answer("uptime", rng, format, lambda: service.uptime(rng, building), lang=lang)
