"""The managers' trends (docs/trends.md): one service over the storage
protocol, so SQLite and InfluxDB give the same numbers.

The backends only sum (per hour, per room, per session length, per device's
telemetry reports); everything else is done here, in pure functions, in one order. Sums of
occupied seconds are rounded to the millisecond as they arrive: the backends
add floats in different orders, and the last bits must not show.
"""

from __future__ import annotations

import asyncio
import statistics
import time as _time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar import constants as cc

from mamaroom.calendar import is_workday
from mamaroom.config import Settings, TrendsSettings
from mamaroom.contract import RegistryRoom
from mamaroom.storage import DeviceReports, HourTotal, TrendsStore, refresh_rollups
from mamaroom.storage.rollups import DAY_MS, HOUR_MS, MAX_SESSION_MIN
from server.alerts_db import AlertsDb

MAX_DAYS = 3660
#: The last day of rollups: the trends service recomputes them itself when a
#: range reaches into it, at most this often.
FRESH_MS = 24 * HOUR_MS
REFRESH_EVERY_S = 60.0
#: Session-length buckets in minutes, [from, to); the last is open.
LENGTH_EDGES = (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 90, 120)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
STEPS = ("acknowledged", "arrived", "resolved")
DayFilter = Literal["all", "workdays", "offdays"]
DayKind = Literal["workday", "weekend", "holiday", "makeup_workday"]


class RangeError(ValueError):
    """The requested date range is not usable (from after to, too long)."""


@dataclass(frozen=True)
class Range:
    """Days [first, last] in the site's time zone, as whole hours [start_ms, end_ms)
    cut at the current hour (only complete hours count)."""

    first: date
    last: date
    tz: ZoneInfo
    start_ms: int
    end_ms: int

    @property
    def hours(self) -> int:
        return max(0, (self.end_ms - self.start_ms) // HOUR_MS)

    def iso(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, self.tz).isoformat()

    def header(self) -> dict[str, Any]:
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "timezone": self.tz.key,
            "start": self.iso(self.start_ms),
            "end": self.iso(max(self.start_ms, self.end_ms)),
        }

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def split(self) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
        """The whole UTC days inside the range (read from the daily rollups),
        and the hours before and after them (read from the hourly ones)."""
        d0 = -(-self.start_ms // DAY_MS) * DAY_MS
        d1 = self.end_ms // DAY_MS * DAY_MS
        if d0 >= d1:
            return None, [(self.start_ms, self.end_ms)] if self.end_ms > self.start_ms else []
        return (d0, d1), [(a, b) for a, b in ((self.start_ms, d0), (d1, self.end_ms)) if b > a]


def local_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tz).timestamp() * 1000)


#: The dates a trend can be asked about: far wider than any data a site has.
EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)


def make_range(first: date | None, last: date | None, tz: ZoneInfo, now_ms: int) -> Range:
    """Default: the last 30 days, today included."""
    today = datetime.fromtimestamp(now_ms / 1000, tz).date()
    last = last or today
    if not EARLIEST <= last <= LATEST or (first is not None and not EARLIEST <= first <= LATEST):
        # Also keeps date arithmetic below from overflowing (year 1 or 9999: a 500).
        raise RangeError(f"dates must be between {EARLIEST} and {LATEST}")
    first = first or last - timedelta(days=29)
    if first > last:
        raise RangeError(f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise RangeError(f"at most {MAX_DAYS} days at once")
    # Hour boundaries (a time zone with a half-hour offset rounds down).
    start = local_ms(first, tz) // HOUR_MS * HOUR_MS
    end = min(
        local_ms(last + timedelta(days=1), tz) // HOUR_MS * HOUR_MS, now_ms // HOUR_MS * HOUR_MS
    )
    return Range(first, last, tz, start, max(start, end))


# --- China's calendar -----------------------------------------------------


def day_kind(day: date) -> DayKind:
    if day in cc.workdays:
        return "makeup_workday"
    if day in cc.holidays:
        return "holiday"
    return "weekend" if day.weekday() >= 5 else "workday"


def calendar_marks(first: date, last: date) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(public holidays off, make-up workdays) within [first, last]."""

    def mark(day: date, name: str) -> dict[str, str]:
        try:
            zh = chinese_calendar.Holiday(name).chinese
        except ValueError:
            zh = name
        return {"date": day.isoformat(), "name": name, "name_zh": zh}

    holidays = [mark(d, h) for d, h in sorted(cc.holidays.items()) if first <= d <= last]
    workdays = [mark(d, h) for d, h in sorted(cc.workdays.items()) if first <= d <= last]
    return holidays, workdays


# --- pure computations ----------------------------------------------------


def _ms3(seconds: float) -> float:
    return round(seconds, 3)


def _frac(x: float) -> float:
    return round(x, 6)


def heatmap(
    totals: Sequence[HourTotal], rng: Range, rooms: int, days: DayFilter = "all"
) -> dict[str, Any]:
    """Occupied share of room-hours by local weekday × hour."""
    occupied = {h: _ms3(o) for h, o, _ in totals}
    seconds = [[0.0] * 24 for _ in range(7)]
    hours = [[0] * 24 for _ in range(7)]
    workday: dict[date, bool] = {}
    for hour in range(rng.start_ms, rng.end_ms, HOUR_MS):
        local = datetime.fromtimestamp(hour / 1000, rng.tz)
        if days != "all":
            d = local.date()
            if d not in workday:
                workday[d] = is_workday(d)
            if workday[d] != (days == "workdays"):
                continue
        wd, h = local.weekday(), local.hour
        hours[wd][h] += 1
        seconds[wd][h] += occupied.get(hour, 0.0)
    cells: list[list[float | None]] = [
        [
            _frac(seconds[wd][h] / (hours[wd][h] * 3600 * rooms))
            if hours[wd][h] and rooms
            else None
            for h in range(24)
        ]
        for wd in range(7)
    ]
    holidays, makeup = calendar_marks(rng.first, rng.last)
    return {
        **rng.header(),
        "days": days,
        "rooms": rooms,
        "cells": cells,
        "hours": hours,
        "max": max((c for row in cells for c in row if c is not None), default=None),
        "holidays": holidays,
        "workdays": makeup,
    }


def rank_rooms(
    totals: Sequence[tuple[str, float, int]],
    rooms: Sequence[RegistryRoom],
    rng: Range,
    settings: TrendsSettings,
) -> dict[str, Any]:
    by_room = {r: (_ms3(o), n) for r, o, n in totals}
    span_s = rng.hours * 3600
    rows: list[dict[str, Any]] = []
    for room in rooms:
        occupied_s, sessions = by_room.get(room.id, (0.0, 0))
        rows.append(
            {
                "id": room.id,
                "name": room.name,
                "name_en": room.name_en,
                "building": room.building,
                "floor": room.floor,
                "utilisation": _frac(occupied_s / span_s) if span_s else None,
                "occupied_h": round(occupied_s / 3600, 3),
                "sessions": sessions,
            }
        )
    known = [r["utilisation"] for r in rows if r["utilisation"] is not None]
    median = _frac(statistics.median(known)) if known else None
    rows.sort(key=lambda r: (-(r["utilisation"] or 0.0), r["id"]))
    for rank, row in enumerate(rows, 1):
        u, flag = row["utilisation"], None
        if median and u is not None:
            if u >= settings.overused_factor * median:
                flag = "over"
            elif u <= settings.underused_factor * median:
                flag = "under"
        row["rank"], row["flag"] = rank, flag
    return {
        **rng.header(),
        "hours": rng.hours,
        "median": median,
        "overused_factor": settings.overused_factor,
        "underused_factor": settings.underused_factor,
        "rooms": rows,
    }


def nearest_rank(counts: dict[int, int], share: float) -> int | None:
    """The smallest length m with at least `share` of the sessions ≤ m."""
    total = sum(counts.values())
    if not total:
        return None
    seen = 0
    for minutes in sorted(counts):
        seen += counts[minutes]
        if seen >= share * total:
            return minutes
    return max(counts)  # pragma: no cover - share ≤ 1 always stops above


def sessions(totals: Sequence[HourTotal], lengths: dict[int, int], rng: Range) -> dict[str, Any]:
    per_day: dict[date, list[float]] = {d: [0, 0.0] for d in rng.days()}
    for hour, occupied_s, n in totals:
        day = datetime.fromtimestamp(hour / 1000, rng.tz).date()
        if day in per_day:
            per_day[day][0] += n
            per_day[day][1] += _ms3(occupied_s)
    days = [
        {
            "date": d.isoformat(),
            "sessions": int(n),
            "occupied_h": round(o / 3600, 3),
            "kind": day_kind(d),
        }
        for d, (n, o) in per_day.items()
    ]
    buckets = []
    for i, lo in enumerate(LENGTH_EDGES):
        hi = LENGTH_EDGES[i + 1] if i + 1 < len(LENGTH_EDGES) else None
        buckets.append(
            {
                "from_min": lo,
                "to_min": hi,
                "sessions": sum(
                    n for m, n in lengths.items() if m >= lo and (hi is None or m < hi)
                ),
            }
        )
    return {
        **rng.header(),
        "days": days,
        "lengths": {
            "sessions": sum(lengths.values()),
            "p50_min": nearest_rank(lengths, 0.5),
            "p90_min": nearest_rank(lengths, 0.9),
            "max_min": MAX_SESSION_MIN,
            "buckets": buckets,
        },
    }


@dataclass(frozen=True)
class CallTimes:
    room: str | None
    raised_ms: int
    acknowledged_ms: int | None
    arrived_ms: int | None
    resolved_ms: int | None


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=10, method="inclusive")
    return round(statistics.median(values), 3), round(q[8], 3)


def _step_figures(calls: Sequence[CallTimes], step: str, target: float | None) -> dict[str, Any]:
    values = sorted(
        (getattr(c, f"{step}_ms") - c.raised_ms) / 1000
        for c in calls
        if getattr(c, f"{step}_ms") is not None
    )
    p50, p90 = _percentiles(values)
    within = (
        _frac(sum(v <= target for v in values) / len(values))
        if values and target is not None
        else None
    )
    return {"n": len(values), "p50_s": p50, "p90_s": p90, "within_target": within}


def call_figures(
    calls: Sequence[CallTimes], rng: Range, settings: TrendsSettings
) -> dict[str, Any]:
    targets: dict[str, float | None] = {
        "acknowledged": settings.call_ack_target_s,
        "arrived": settings.call_arrive_target_s,
        "resolved": None,
    }

    def figures(group: Sequence[CallTimes]) -> dict[str, Any]:
        return {"calls": len(group), **{s: _step_figures(group, s, targets[s]) for s in STEPS}}

    months: dict[str, list[CallTimes]] = {}
    for d in rng.days():
        months.setdefault(d.strftime("%Y-%m"), [])
    for c in sorted(calls, key=lambda c: c.raised_ms):
        key = datetime.fromtimestamp(c.raised_ms / 1000, rng.tz).strftime("%Y-%m")
        months.setdefault(key, []).append(c)
    return {
        **rng.header(),
        "targets": targets,
        "total": figures(calls),
        "months": [{"month": m, **figures(g)} for m, g in sorted(months.items())],
    }


def uptime(
    reports: Sequence[DeviceReports],
    rooms: Sequence[RegistryRoom],
    rng: Range,
    measured: tuple[int, int],
    interval_s: float,
) -> dict[str, Any]:
    """Each device's online time from the telemetry rollup: the gaps between
    its reports that count as online (rollups.telemetry_hours). Rollups made
    before that was measured (InfluxDB: no `online_ms`) count each report
    as `interval_s`."""
    start, end = measured
    span_s = max(0, end - start) / 1000
    seen = {d: (n, online, reboots) for d, n, online, reboots in reports}
    devices: list[dict[str, Any]] = []
    for room in rooms:
        if room.device is None:
            continue
        n, online_ms, reboots = seen.get(room.device, (0, 0, 0))
        online = n * interval_s if online_ms is None else online_ms / 1000
        online_s = round(min(online, span_s), 3)
        devices.append(
            {
                "device": room.device,
                "room": room.id,
                "name": room.name,
                "name_en": room.name_en,
                "building": room.building,
                "floor": room.floor,
                "online_s": online_s,
                "reports": n,
                "uptime": _frac(online_s / span_s) if span_s else None,
                "reboots": reboots or 0,
            }
        )
    devices.sort(key=lambda d: (d["uptime"] if d["uptime"] is not None else 2.0, d["device"]))
    total = sum(d["online_s"] for d in devices)
    return {
        **rng.header(),
        "measured_start": rng.iso(start),
        "measured_end": rng.iso(end),
        "telemetry_interval_s": interval_s,
        "uptime": _frac(total / (span_s * len(devices))) if span_s and devices else None,
        "devices": devices,
    }


# --- the service ----------------------------------------------------------


class CallsDb(AlertsDb):
    """Reads call response times from the server's alerts database."""

    async def call_times(self, start_ms: int, end_ms: int) -> list[CallTimes]:
        return await self._run(
            lambda db: [
                CallTimes(*row)
                for row in db.execute(
                    "SELECT room, raised_at_ms, acknowledged_at_ms, arrived_at_ms, resolved_at_ms"
                    " FROM alerts WHERE kind='call' AND test=0 AND raised_at_ms >= ?"
                    " AND raised_at_ms < ? ORDER BY raised_at_ms, id",
                    (start_ms, end_ms),
                )
            ]
        )


class TrendsService:
    """The trends of one site. `rooms()` gives the registry's current rooms."""

    def __init__(
        self,
        settings: Settings,
        store: TrendsStore,
        calls: CallsDb,
        rooms: Callable[[], Sequence[RegistryRoom]],
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.calls_db = calls
        self._rooms = rooms
        self._now = now_ms or (lambda: int(_time.time() * 1000))
        self.tz = ZoneInfo(settings.timezone)
        self._refreshed_at = 0.0
        self._refresh_lock = asyncio.Lock()

    def range(self, first: date | None, last: date | None) -> Range:
        return make_range(first, last, self.tz, self._now())

    def rooms(self, building: str | None = None) -> list[RegistryRoom]:
        return [
            r
            for r in self._rooms()
            if r.device is not None
            and (building is None or building in (r.building, r.building_en))
        ]

    async def _fresh(self, rng: Range) -> None:
        """Recompute the last day's rollups when the range reaches into it."""
        now_hour = self._now() // HOUR_MS * HOUR_MS
        if rng.end_ms <= now_hour - FRESH_MS:
            return
        async with self._refresh_lock:
            if _time.monotonic() - self._refreshed_at < REFRESH_EVERY_S and self._refreshed_at:
                return
            # The telemetry rollup (uptime) is the gateway's: it reads every
            # report of the day, too slow to wait for in a request.
            await refresh_rollups(self.store, now_hour - FRESH_MS, now_hour, telemetry=False)
            self._refreshed_at = _time.monotonic()

    async def _hour_totals(self, rng: Range, building: str | None) -> list[HourTotal]:
        """Without a building: the site rollup (every room with data, summed
        when the rollups were made); with one: that building's rooms' rows."""
        if building is None:
            return await self.store.site_hour_totals(rng.start_ms, rng.end_ms)
        return await self.store.rollup_hour_totals(
            rng.start_ms, rng.end_ms, [r.id for r in self.rooms(building)]
        )

    async def heatmap(
        self, rng: Range, building: str | None = None, days: DayFilter = "all"
    ) -> dict[str, Any]:
        await self._fresh(rng)
        totals = await self._hour_totals(rng, building)
        return heatmap(totals, rng, len(self.rooms(building)), days)

    async def rooms_ranked(self, rng: Range, building: str | None = None) -> dict[str, Any]:
        await self._fresh(rng)
        rooms = self.rooms(building)
        ids = [r.id for r in rooms]
        whole, edges = rng.split()
        # Independent queries: concurrently (InfluxDB answers them in parallel).
        parts = await asyncio.gather(
            *([self.store.daily_room_totals(*whole, ids)] if whole else []),
            *(self.store.rollup_room_totals(a, b, ids) for a, b in edges),
        )
        merged: dict[str, tuple[float, int]] = {}
        for part in parts:
            for room, occupied_s, n in part:
                o, m = merged.get(room, (0.0, 0))
                merged[room] = (_ms3(o + _ms3(occupied_s)), m + n)
        totals = [(room, o, n) for room, (o, n) in sorted(merged.items())]
        return rank_rooms(totals, rooms, rng, self.settings.trends)

    async def sessions(self, rng: Range, building: str | None = None) -> dict[str, Any]:
        await self._fresh(rng)
        lengths: dict[int, int] = {}
        queries: list[Awaitable[dict[int, int]]]
        if building is None:
            whole, edges = rng.split()
            queries = [self.store.site_session_length_counts(*whole)] if whole else []
            queries += [self.store.session_length_counts(a, b) for a, b in edges]
        else:
            ids = [r.id for r in self.rooms(building)]
            queries = [self.store.session_length_counts(rng.start_ms, rng.end_ms, ids)]
        totals, parts = await asyncio.gather(
            self._hour_totals(rng, building), asyncio.gather(*queries)
        )
        for part in parts:
            for minutes, n in part.items():
                lengths[minutes] = lengths.get(minutes, 0) + n
        return sessions(totals, lengths, rng)

    async def calls(self, rng: Range, building: str | None = None) -> dict[str, Any]:
        ids = {r.id for r in self.rooms(building)} if building is not None else None
        rows = await self.calls_db.call_times(rng.start_ms, rng.end_ms)
        if ids is not None:
            rows = [c for c in rows if c.room in ids]
        return call_figures(rows, rng, self.settings.trends)

    async def uptime(self, rng: Range, building: str | None = None) -> dict[str, Any]:
        await self._fresh(rng)
        kept_from = self._now() - self.settings.storage.telemetry_retention_days * DAY_MS
        start = -(-max(rng.start_ms, kept_from) // HOUR_MS) * HOUR_MS  # whole hours only
        end = max(start, rng.end_ms)
        reports = await self.store.telemetry_totals(start, end) if end > start else []
        return uptime(
            reports,
            self.rooms(building),
            rng,
            (start, end),
            self.settings.trends.telemetry_interval_s,
        )


# --- CSV ------------------------------------------------------------------


CsvLang = Literal["en", "zh"]
#: Chinese column names (`lang=zh`): a manager opens the file in Excel.
CSV_HEADERS_ZH = {
    "weekday": "星期序号（0=周一）",
    "weekday_name": "星期",
    "hour": "小时",
    "utilisation": "使用率",
    "hours": "统计小时数",
    "rank": "排名",
    "id": "房间编号",
    "name": "名称",
    "name_en": "英文名称",
    "building": "楼宇",
    "floor": "楼层",
    "occupied_h": "使用时长（小时）",
    "sessions": "使用次数",
    "flag": "标记",
    "date": "日期",
    "kind": "日期类型",
    "from_min": "时长下限（分钟）",
    "to_min": "时长上限（分钟，不含）",
    "month": "月份",
    "calls": "呼叫次数",
    "device": "设备编号",
    "room": "房间编号",
    "reports": "上报次数",
    "online_s": "在线时长（秒）",
    "uptime": "在线率",
    "reboots": "重启次数",
}
_STEPS_ZH = {"ack": "接警", "arrived": "到场", "resolved": "解除"}
_MEASURES_ZH = {
    "n": "次数",
    "p50_s": "中位数（秒）",
    "p90_s": "P90（秒）",
    "target_s": "目标（秒）",
    "within_target": "达标比例",
}
#: Values that are words, not data: weekday names, kinds of day, flags.
CSV_VALUES_ZH = {
    "weekday_name": dict(
        zip(WEEKDAYS, ("周一", "周二", "周三", "周四", "周五", "周六", "周日"), strict=True)
    ),
    "kind": {
        "workday": "工作日",
        "weekend": "周末",
        "holiday": "节假日",
        "makeup_workday": "调休上班",
    },
    "flag": {"over": "使用过度", "under": "使用偏少"},
}


def _header_zh(column: str) -> str:
    if column in CSV_HEADERS_ZH:
        return CSV_HEADERS_ZH[column]
    step, _, measure = column.partition("_")  # the calls' ack_p50_s, arrived_n, ...
    return f"{_STEPS_ZH[step]} {_MEASURES_ZH[measure]}"


def csv_rows(
    kind: str, data: dict[str, Any], table: str = "days", lang: CsvLang = "en"
) -> list[list[Any]]:
    """The chart's data as CSV rows, the header first (docs/trends.md); with
    `lang="zh"` the header and the word values in Chinese."""
    rows = _csv_rows(kind, data, table)
    if lang == "en":
        return rows
    header = rows[0]
    maps = [CSV_VALUES_ZH.get(column) for column in header]
    return [[_header_zh(c) for c in header]] + [
        [
            m.get(v, v) if m is not None and isinstance(v, str) else v
            for v, m in zip(row, maps, strict=True)
        ]
        for row in rows[1:]
    ]


def _csv_rows(kind: str, data: dict[str, Any], table: str) -> list[list[Any]]:
    if kind == "heatmap":
        return [["weekday", "weekday_name", "hour", "utilisation", "hours"]] + [
            [wd, WEEKDAYS[wd], h, data["cells"][wd][h], data["hours"][wd][h]]
            for wd in range(7)
            for h in range(24)
        ]
    if kind == "rooms":
        cols = [
            "rank",
            "id",
            "name",
            "name_en",
            "building",
            "floor",
            "utilisation",
            "occupied_h",
            "sessions",
            "flag",
        ]
        return [cols] + [[r[c] for c in cols] for r in data["rooms"]]
    if kind == "sessions" and table == "lengths":
        cols = ["from_min", "to_min", "sessions"]
        return [cols] + [[b[c] for c in cols] for b in data["lengths"]["buckets"]]
    if kind == "sessions":
        cols = ["date", "sessions", "occupied_h", "kind"]
        return [cols] + [[d[c] for c in cols] for d in data["days"]]
    if kind == "calls":
        head = ["month", "calls"]
        for short, step in (
            ("ack", "acknowledged"),
            ("arrived", "arrived"),
            ("resolved", "resolved"),
        ):
            head += [f"{short}_n", f"{short}_p50_s", f"{short}_p90_s"]
            if step != "resolved":
                head += [f"{short}_target_s", f"{short}_within_target"]
        rows: list[list[Any]] = [head]
        for m in data["months"]:
            row = [m["month"], m["calls"]]
            for step in STEPS:
                f = m[step]
                row += [f["n"], f["p50_s"], f["p90_s"]]
                if step != "resolved":
                    row += [data["targets"][step], f["within_target"]]
            rows.append(row)
        return rows
    if kind == "uptime":
        cols = [
            "device",
            "room",
            "name",
            "name_en",
            "building",
            "floor",
            "reports",
            "online_s",
            "uptime",
            "reboots",
        ]
        return [cols] + [[d[c] for c in cols] for d in data["devices"]]
    raise ValueError(kind)
