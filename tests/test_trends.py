"""Trends on hand-built data whose right answers are known by hand, on both
backends (a real InfluxDB), and the session-length rollup."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mamaroom.config import Settings
from mamaroom.contract import Kind, Occupancy, RegistryRoom, Telemetry
from mamaroom.storage import Record, TrendsStore, refresh_rollups
from mamaroom.storage.embedded import EmbeddedStore
from mamaroom.storage.influx import InfluxStore
from mamaroom.storage.rollups import (
    DAY_MS,
    HOUR_MS,
    DayRollup,
    HourRollup,
    OccupancyEvent,
    SessionRollup,
    SiteHourRollup,
    SiteSessionDay,
    coarse_rollups,
    session_lengths,
)
from mamaroom.storage.sqlite import SqliteSeries
from server.services.trends import (
    CallsDb,
    RangeError,
    TrendsService,
    csv_rows,
    make_range,
    uptime,
)
from tests.support import InfluxDB

TZ = ZoneInfo("Asia/Shanghai")
TODAY = datetime.now(TZ).date()
#: Last week's Monday: recent enough for raw telemetry (kept 30 days; InfluxDB's
#: retention policy drops older points on arrival).
MONDAY = TODAY - timedelta(days=TODAY.weekday() + 7)
MAKEUP = date(2026, 10, 10)  # a make-up workday (Saturday) of National Day 2026
MIN = 60_000
ROOMS = [
    RegistryRoom(
        id="R1", name="一号母婴室", name_en="Room one", building="A座", floor=1, device="dev-1"
    ),
    RegistryRoom(
        id="R2", name="二号母婴室", name_en="Room two", building="B座", floor=2, device="dev-2"
    ),
    RegistryRoom(id="R3", name="无节点", name_en="No node", building="B座", floor=3),
]


def at(day: date, hh: int = 0, mm: int = 0) -> int:
    return int(datetime.combine(day, time(hh, mm), TZ).timestamp() * 1000)


class Writer:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.seq: dict[str, int] = {}

    def _env(self, device: str, boot: int, t_ms: int) -> dict[str, Any]:
        self.seq[device] = self.seq.get(device, 0) + 1
        return {"v": 1, "boot": boot, "seq": self.seq[device], "ts": t_ms}

    def occupancy(self, room: str, device: str, t_ms: int, occupied: bool) -> None:
        msg = Occupancy(source="door", still_s=0, occupied=occupied, **self._env(device, 1, t_ms))
        self.records.append(Record(device, room, Kind.OCCUPANCY, msg, t_ms))

    def telemetry(self, room: str, device: str, t_ms: int, boot: int) -> None:
        msg = Telemetry(
            uptime_s=1, rssi=-60, heap_free=90_000, fw="1.0.0", **self._env(device, boot, t_ms)
        )
        self.records.append(Record(device, room, Kind.TELEMETRY, msg, t_ms))


def known_data() -> Writer:
    w = Writer()
    # R1: occupied 09:00-09:30 on the Monday; R2 never.
    w.occupancy("R1", "dev-1", at(MONDAY, 9), True)
    w.occupancy("R1", "dev-1", at(MONDAY, 9, 10), True)  # a refresh: no new session
    w.occupancy("R1", "dev-1", at(MONDAY, 9, 30), False)
    w.occupancy("R2", "dev-2", at(MONDAY, 0, 5), False)
    # The make-up workday Saturday 2026-10-10 (National Day): R1 10:00-11:00.
    w.occupancy("R1", "dev-1", at(MAKEUP, 10), True)
    w.occupancy("R1", "dev-1", at(MAKEUP, 11), False)
    # dev-1 reports every minute from 00:00 to 12:00 on the Monday, rebooting at
    # 06:00, and away from 03:00 to 03:30 (the reports of 02:59 and 03:30 are 31
    # minutes apart).
    for minute in range(12 * 60):
        if not 180 <= minute < 210:
            w.telemetry("R1", "dev-1", at(MONDAY) + minute * MIN, 1 if minute < 360 else 2)
    # dev-2 reports every 30 minutes (as the history generator writes) from
    # 12:00 to midnight, and is away from 16:00 to 18:30.
    for k in range(25):
        if not 9 <= k <= 12:
            w.telemetry("R2", "dev-2", at(MONDAY, 12) + k * 30 * MIN, 1)
    return w


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    db = InfluxDB(tmp_path_factory.mktemp("influxdb")).start()
    yield db
    db.stop()


async def _store(
    backend: str, tmp: Path, influx: InfluxDB | None, records: list[Record], span: tuple[int, int]
) -> AsyncIterator[tuple[Settings, TrendsStore]]:
    env: dict[str, Any] = {"data_dir": tmp}
    if influx is not None:
        env["storage"] = {
            "backend": "influxdb",
            "influxdb": {"url": influx.url, "database": tmp.name, "flush_interval_s": 0.1},
        }
    settings = Settings(**env)
    store: SqliteSeries | InfluxStore
    home: EmbeddedStore | InfluxStore
    if influx is None:
        home = EmbeddedStore(settings.store_path)
        await home.open()
        store = home.series
        await store.write(records)
        drainer = None
    else:
        store = home = InfluxStore(settings.storage.influxdb, settings.spool_path, gateway="t")
        await store.open()
        drainer = asyncio.create_task(store.run_drainer())
        await store.write(records)
        for _ in range(600):
            if (await store.stats()).depth == 0:
                break
            await asyncio.sleep(0.1)
        assert (await store.stats()).depth == 0
    await refresh_rollups(store, *span)
    try:
        yield settings, store
    finally:
        if drainer:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        await home.close()


@pytest.fixture(params=["sqlite", "influxdb"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TrendsService]:
    influx = request.getfixturevalue("influx") if request.param == "influxdb" else None
    span = (
        min(at(MONDAY), at(date(2026, 9, 28))) - 24 * HOUR_MS,
        at(max(MONDAY + timedelta(days=3), date(2026, 10, 12))),
    )
    async for settings, store in _store(
        request.param, tmp_path, influx, known_data().records, span
    ):
        calls = CallsDb(settings.server_db_path)
        await calls.open()
        for i, (ack_s, arrive_s) in enumerate([(30, 120), (90, 400)]):
            raised = at(MONDAY, 9, 5) + i * MIN
            await calls.add_past_call(
                room="R1",
                device="dev-1",
                call_id=f"c{i}",
                raised_ms=raised,
                acknowledged_ms=raised + ack_s * 1000,
                arrived_ms=raised + arrive_s * 1000,
                resolved_ms=raised + 600_000,
            )
        yield TrendsService(settings, store, calls, lambda: ROOMS)
        await calls.close()


async def test_heatmap_cell_of_a_known_half_hour(service: TrendsService) -> None:
    rng = service.range(MONDAY, MONDAY)
    data = await service.heatmap(rng)
    assert data["rooms"] == 2  # R3 has no node: not counted
    assert data["cells"][0][9] == 0.25  # half an hour of one room in two
    assert sum(c for c in data["cells"][0] if c is not None) == 0.25
    assert data["cells"][1] == [None] * 24  # no Tuesday in a one-day range
    assert data["hours"][0] == [1] * 24
    one = await service.heatmap(rng, building="A座")
    assert (one["rooms"], one["cells"][0][9]) == (1, 0.5)
    assert data["start"] == f"{MONDAY.isoformat()}T00:00:00+08:00"


async def test_make_up_workday_listed_and_counted_as_a_workday(service: TrendsService) -> None:
    rng = service.range(date(2026, 9, 28), date(2026, 10, 11))
    data = await service.heatmap(rng, days="workdays")
    assert {"date": "2026-10-10", "name": "National Day", "name_zh": "国庆节"} in data["workdays"]
    assert "2026-10-01" in [h["date"] for h in data["holidays"]]
    assert "2026-10-10" not in [h["date"] for h in data["holidays"]]
    # Saturday 10:00 as a workday: only the make-up Saturday, R1 full for the hour.
    assert data["hours"][5][10] == 1
    assert data["cells"][5][10] == 0.5
    assert data["hours"][3][10] == 1  # Thursday 10-01 is a holiday; 10-08 is a workday
    off = await service.heatmap(rng, days="offdays")
    assert off["hours"][5][10] == 1 and off["cells"][5][10] == 0.0  # Saturday 10-03
    days = {d["date"]: d for d in (await service.sessions(rng))["days"]}
    assert days["2026-10-10"]["kind"] == "makeup_workday"
    assert days["2026-10-01"]["kind"] == "holiday"
    assert days["2026-09-28"]["kind"] == "workday"
    assert days["2026-10-10"]["sessions"] == 1


async def test_rooms_ranked_and_flagged(service: TrendsService) -> None:
    data = await service.rooms_ranked(service.range(MONDAY, MONDAY))
    r1, r2 = data["rooms"]
    assert (r1["id"], r1["rank"], r1["sessions"]) == ("R1", 1, 1)
    assert r1["utilisation"] == round(1800 / 86400, 6)
    assert r1["occupied_h"] == 0.5
    assert (r2["id"], r2["utilisation"], r2["sessions"]) == ("R2", 0.0, 0)
    assert data["median"] == round(1800 / 86400 / 2, 6)
    assert (r1["flag"], r2["flag"]) == ("over", "under")
    assert r1["name"] == "一号母婴室"
    # Over several days: whole UTC days from the daily rollups, the edges hourly.
    week = await service.rooms_ranked(
        service.range(MONDAY - timedelta(days=3), MONDAY + timedelta(days=2))
    )
    assert (week["rooms"][0]["occupied_h"], week["rooms"][0]["sessions"]) == (0.5, 1)
    assert week["rooms"][0]["utilisation"] == round(1800 / (6 * 86400), 6)


async def test_sessions_per_day_and_lengths(service: TrendsService) -> None:
    tuesday = MONDAY + timedelta(days=1)
    data = await service.sessions(service.range(MONDAY, tuesday))
    assert [(d["date"], d["sessions"], d["occupied_h"]) for d in data["days"]] == [
        (MONDAY.isoformat(), 1, 0.5),
        (tuesday.isoformat(), 0, 0.0),
    ]
    lengths = data["lengths"]
    assert (lengths["sessions"], lengths["p50_min"], lengths["p90_min"]) == (1, 30, 30)
    assert [b["sessions"] for b in lengths["buckets"] if b["from_min"] == 30] == [1]
    assert sum(b["sessions"] for b in lengths["buckets"]) == 1


async def test_call_response_times(service: TrendsService) -> None:
    data = await service.calls(service.range(MONDAY, MONDAY))
    ack = data["total"]["acknowledged"]
    # 30 s and 90 s: median 60, p90 interpolated 30 + 0.9 × 60 = 84; one of two ≤ 60 s.
    assert (ack["n"], ack["p50_s"], ack["p90_s"], ack["within_target"]) == (2, 60.0, 84.0, 0.5)
    arrived = data["total"]["arrived"]
    assert (arrived["p50_s"], arrived["within_target"]) == (260.0, 0.5)
    assert data["total"]["resolved"]["within_target"] is None
    assert [m["month"] for m in data["months"]] == [MONDAY.strftime("%Y-%m")]
    assert data["targets"] == {"acknowledged": 60.0, "arrived": 300.0, "resolved": None}
    other = await service.calls(service.range(MONDAY, MONDAY), building="B座")
    assert other["total"]["calls"] == 0 and other["total"]["acknowledged"]["p50_s"] is None


async def test_uptime_from_the_gaps_between_reports(service: TrendsService) -> None:
    """Each node's own interval, on both backends: a minute for dev-1, 30
    minutes for dev-2; a gap over 2.5 times that is time away."""
    data = await service.uptime(service.range(MONDAY, MONDAY))
    assert data["measured_start"] == f"{MONDAY.isoformat()}T00:00:00+08:00"
    assert data["measured_end"] == f"{(MONDAY + timedelta(days=1)).isoformat()}T00:00:00+08:00"
    by_device = {d["device"]: d for d in data["devices"]}
    # 00:00 to 11:59 is 719 minutes, less the 31-minute gap.
    assert by_device["dev-1"]["online_s"] == 688 * 60
    assert by_device["dev-1"]["reports"] == 690
    assert by_device["dev-1"]["uptime"] == round(688 * 60 / 86400, 6)
    assert by_device["dev-1"]["reboots"] == 1
    # Noon to midnight (its last gap ends at Tuesday 00:00), less 16:00-18:30.
    assert by_device["dev-2"]["online_s"] == 9.5 * 3600
    assert (by_device["dev-2"]["reports"], by_device["dev-2"]["reboots"]) == (20, 0)
    assert data["uptime"] == round((688 * 60 + 9.5 * 3600) / (2 * 86400), 6)
    assert [d["device"] for d in data["devices"]] == ["dev-2", "dev-1"]  # worst first
    # The afternoon alone: dev-1 sent nothing, dev-2 was away 2.5 of 12 hours.
    # (Ranges are whole days: the hours come from the rollup rows directly.)
    totals = {
        d: (n, online)
        for d, n, online, _ in await service.store.telemetry_totals(
            at(MONDAY, 12), at(MONDAY + timedelta(days=1))
        )
    }
    assert totals == {"dev-2": (20, int(9.5 * 3600 * 1000))}
    # Outside raw telemetry's retention nothing can be measured.
    old = await service.uptime(service.range(date(2026, 1, 5), date(2026, 1, 5)))
    assert old["measured_start"] == old["measured_end"]
    assert old["uptime"] is None and old["devices"][0]["uptime"] is None


async def test_csv_rows(service: TrendsService) -> None:
    rng = service.range(MONDAY, MONDAY)
    rows = csv_rows("heatmap", await service.heatmap(rng))
    assert rows[0] == ["weekday", "weekday_name", "hour", "utilisation", "hours"]
    assert rows[1 + 9] == [0, "Mon", 9, 0.25, 1] and len(rows) == 1 + 168
    rooms = csv_rows("rooms", await service.rooms_ranked(rng))
    assert rooms[1][:3] == [1, "R1", "一号母婴室"]
    lengths = csv_rows("sessions", await service.sessions(rng), "lengths")
    assert lengths[0] == ["from_min", "to_min", "sessions"] and lengths[-1][:2] == [120, None]
    calls = csv_rows("calls", await service.calls(rng))
    assert calls[1][:7] == [MONDAY.strftime("%Y-%m"), 2, 2, 60.0, 84.0, 60.0, 0.5]


def test_range_rules() -> None:
    now = at(MONDAY, 14, 20)
    rng = make_range(None, None, TZ, now)
    assert (rng.first, rng.last) == (MONDAY - timedelta(days=29), MONDAY)  # 30 days with today
    assert rng.end_ms == at(MONDAY, 14)  # complete hours only
    with pytest.raises(RangeError):
        make_range(MONDAY + timedelta(days=1), MONDAY, TZ, now)
    with pytest.raises(RangeError):
        make_range(date(2010, 1, 1), MONDAY, TZ, now)
    # Dates at the ends of the calendar are a 422, not an overflow (found by schemathesis).
    for first, last in (
        (None, date(1, 1, 1)),
        (date(9999, 12, 31), None),
        (MONDAY, date(9999, 12, 31)),
    ):
        with pytest.raises(RangeError, match="between"):
            make_range(first, last, TZ, now)


H0 = at(MONDAY)


def ev(minute: int, occupied: bool, room: str = "R1") -> OccupancyEvent:
    return OccupancyEvent(room, H0 + minute * MIN, occupied)


def test_session_lengths_by_start_hour() -> None:
    events = [
        ev(50, True),
        ev(55, True),
        ev(80, False),  # 30 min, started in hour 0
        ev(100, True),
        ev(130, False),  # 30 min, started in hour 1, ends after end
        ev(170, True),
    ]  # still going at the horizon: not yet counted
    rows = session_lengths(events, H0, H0 + 2 * HOUR_MS, {}, H0 + 200 * MIN)
    assert rows == [SessionRollup("R1", H0, 30, 1), SessionRollup("R1", H0 + HOUR_MS, 30, 1)]
    # Occupied before the window: that session belongs to an earlier window.
    assert session_lengths([ev(10, False)], H0, H0 + HOUR_MS, {"R1": True}, H0 + HOUR_MS) == []
    # A session that has lasted the maximum is counted as the maximum.
    long = session_lengths([ev(0, True)], H0, H0 + HOUR_MS, {}, H0 + 700 * MIN)
    assert long == [SessionRollup("R1", H0, 600, 1)]


def test_coarse_rollups_sum_whole_utc_days() -> None:
    day = H0 // DAY_MS * DAY_MS
    hourly = [
        HourRollup("R1", day, 600.0, 1),
        HourRollup("R2", day, 1200.5, 2),
        HourRollup("R1", day + HOUR_MS, 60.0, 0),
        HourRollup("R1", day + DAY_MS, 5.0, 1),
    ]  # the next day: outside
    sessions = [SessionRollup("R1", day, 10, 1), SessionRollup("R2", day + HOUR_MS, 10, 2)]
    coarse = coarse_rollups(hourly, sessions, day, day + DAY_MS)
    assert coarse.site_hours == [
        SiteHourRollup(day, 1800.5, 3),
        SiteHourRollup(day + HOUR_MS, 60.0, 0),
    ]
    assert coarse.days == [DayRollup("R1", day, 660.0, 1), DayRollup("R2", day, 1200.5, 2)]
    assert coarse.site_sessions == [SiteSessionDay(day, 10, 3)]
    with pytest.raises(ValueError):
        coarse_rollups([], [], day + HOUR_MS, day + DAY_MS)


async def test_telemetry_rollups_from_before_online_time(tmp_path: Path) -> None:
    """Rollups made when uptime was reports × 60 s keep that meaning: SQLite
    fills the new columns so on upgrade; InfluxDB's old points lack the
    fields, and their reports count at `trends.telemetry_interval_s`."""
    path = tmp_path / "store.sqlite"
    hour = at(MONDAY, 9)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE telemetry_hourly (device TEXT NOT NULL, hour_ms INTEGER NOT NULL,"
        " points INTEGER NOT NULL, min_boot INTEGER NOT NULL, max_boot INTEGER NOT NULL,"
        " PRIMARY KEY (hour_ms, device)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO telemetry_hourly VALUES ('dev-1', ?, 30, 1, 2)", (hour,))
    db.commit()
    db.close()
    store = EmbeddedStore(path)
    await store.open()
    try:
        assert await store.series.telemetry_totals(hour, hour + HOUR_MS) == [
            ("dev-1", 30, 30 * MIN, 1)
        ]
    finally:
        await store.close()
    rng = make_range(MONDAY, MONDAY, TZ, at(MONDAY + timedelta(days=1)))
    data = uptime([("dev-1", 30, None, None)], ROOMS, rng, (hour, hour + HOUR_MS), 60.0)
    assert (data["devices"][1]["online_s"], data["devices"][1]["uptime"]) == (1800, 0.5)


async def test_csv_rows_in_chinese(service: TrendsService) -> None:
    """`lang=zh`: the header and the words among the values in Chinese; the
    numbers, ids and names as in English."""
    rng = service.range(MONDAY, MONDAY)
    for kind, data, table in (
        ("heatmap", await service.heatmap(rng), "days"),
        ("rooms", await service.rooms_ranked(rng), "days"),
        ("sessions", await service.sessions(rng), "days"),
        ("sessions", await service.sessions(rng), "lengths"),
        ("calls", await service.calls(rng), "days"),
        ("uptime", await service.uptime(rng), "days"),
    ):
        en, zh = csv_rows(kind, data, table), csv_rows(kind, data, table, "zh")
        assert len(zh[0]) == len(en[0]) and len(set(zh[0])) == len(zh[0]), (kind, zh[0])
        assert all(re.search("[\u4e00-\u9fff]", c) for c in zh[0]), (kind, zh[0])
        assert len(zh) == len(en)
    heat = csv_rows("heatmap", await service.heatmap(rng), lang="zh")
    assert heat[1 + 9] == [0, "周一", 9, 0.25, 1]
    rooms = csv_rows("rooms", await service.rooms_ranked(rng), lang="zh")
    assert rooms[0][:3] == ["排名", "房间编号", "名称"]
    assert [r[-1] for r in rooms[1:]] == ["使用过度", "使用偏少"]
    calls = csv_rows("calls", await service.calls(rng), lang="zh")
    assert calls[0][2:5] == ["接警 次数", "接警 中位数（秒）", "接警 P90（秒）"]
    assert calls[1][:7] == [MONDAY.strftime("%Y-%m"), 2, 2, 60.0, 84.0, 60.0, 0.5]
