"""The history generator: realistic shape, idempotent, the same on both backends."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cli.history import HISTORY_BOOT_BASE, OtherDataError, day_span, generate, history_boots
from mamaroom.calendar import is_workday
from mamaroom.config import PROJECT_ROOT, load_settings
from mamaroom.contract import Kind, Occupancy
from mamaroom.registry import read_rooms_csv
from mamaroom.storage import Record
from mamaroom.storage.embedded import EmbeddedStore
from tests.support import ROOT, DeviceFactory, InfluxDB, Services

ROOMS = read_rooms_csv(PROJECT_ROOT / "site" / "rooms.csv")[:20]
END = date(2026, 10, 12)  # covers 2026's National Day week and its make-up workdays
RECENT = date.today() + timedelta(days=1)
TZ = ZoneInfo("Asia/Shanghai")


def run(
    tmp_path: Path, backend: str = "sqlite", end: date = END, days: int = 21, **env: object
) -> dict[str, int]:
    settings = load_settings(data_dir=tmp_path / "data", **env)
    return asyncio.run(
        generate(
            settings,
            ROOMS,
            days=days,
            end=end,
            backend=backend,
            seed=7,
            telemetry_every_min=60,
            show_progress=False,
        )
    )


def test_history_has_the_shape_of_working_life(tmp_path: Path) -> None:
    counts = run(tmp_path)
    assert counts["occupancy"] > 500
    assert counts["telemetry"] == 0  # older than the 30-day telemetry retention
    db = sqlite3.connect(tmp_path / "data" / "store.sqlite")
    rows = db.execute(
        "SELECT device, time_ms, occupied FROM occupancy ORDER BY device, time_ms"
    ).fetchall()
    sessions: dict[date, int] = defaultdict(int)
    by_device: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for device, t, occupied in rows:
        by_device[device].append((t, occupied))
    for events in by_device.values():
        # Strictly alternating in / out: sessions never overlap in one room.
        assert [o for _, o in events] == [1, 0] * (len(events) // 2)
        for (start, _), (stop, _) in zip(events[::2], events[1::2], strict=True):
            assert 8 * 60_000 <= stop - start <= 60 * 60_000
            sessions[datetime.fromtimestamp(start / 1000, TZ).date()] += 1
    work = [n for d, n in sessions.items() if is_workday(d)]
    off = [n for d, n in sessions.items() if not is_workday(d)]
    assert not is_workday(date(2026, 10, 1)) and off  # the holiday is in the window
    assert sum(off) / len(off) < 0.3 * sum(work) / len(work)
    hours: defaultdict[int, int] = defaultdict(int)
    for device_events in by_device.values():
        for t, occupied in device_events:
            if occupied:
                hours[datetime.fromtimestamp(t / 1000, TZ).hour] += 1
    assert hours[12] > hours[8] and hours[12] > 4 * hours.get(19, 0)  # lunch-time peak
    # Running it again with the same seed adds nothing.
    again = run(tmp_path)
    assert again["occupancy"] == 0 and again["duplicates"] == (
        counts["occupancy"] + counts["telemetry"] + counts["call"]
    )
    # Rollups: every room, every hour; a day's occupied time matches the sessions.
    assert counts["rollups"] == 20 * 21 * 24
    total = db.execute("SELECT SUM(occupied_s), SUM(sessions) FROM occupancy_hourly").fetchone()
    sessions_total = sum(sessions.values())
    assert total[1] == sessions_total
    assert 8 * 60 * sessions_total <= total[0] <= 60 * 60 * sessions_total


def test_the_same_history_lands_in_influxdb(tmp_path: Path) -> None:
    influx = InfluxDB(tmp_path / "influxdb").start()
    try:
        sqlite_counts = run(tmp_path / "a", end=RECENT)
        assert sqlite_counts["telemetry"] > 20 * 20 * 20  # recent: within retention
        influx_counts = run(
            tmp_path / "b", "influxdb", end=RECENT, storage={"influxdb": {"url": influx.url}}
        )
        assert influx_counts == sqlite_counts
        assert influx.count("occupancy", "occupied") == sqlite_counts["occupancy"]
        assert influx.count("telemetry", "rssi", rp="telemetry_30d") == sqlite_counts["telemetry"]
        # The rollups are the same numbers on both backends.
        series = influx.query('SELECT sum("occupied_s"), sum("sessions") FROM occupancy_hourly')
        db = sqlite3.connect(tmp_path / "a" / "data" / "store.sqlite")
        expected = db.execute("SELECT SUM(occupied_s), SUM(sessions) FROM occupancy_hourly")
        occupied_s, sessions = expected.fetchone()
        assert series[0]["values"][0][1] == pytest.approx(occupied_s)
        assert series[0]["values"][0][2] == sessions
        # Another span over these days (other boots) is refused on both backends.
        for path, backend in ((tmp_path / "a", "sqlite"), (tmp_path / "b", "influxdb")):
            with pytest.raises(OtherDataError):
                run(path, backend, end=RECENT, days=20, storage={"influxdb": {"url": influx.url}})
    finally:
        influx.stop()


def test_generated_boots_are_above_any_live_boot_and_apart_per_run(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    start, _ = day_span(settings, 21, END)
    first, end = history_boots(start)
    assert first >= HISTORY_BOOT_BASE == 2**40
    assert history_boots(start + 60_000)[0] >= end  # a run a minute later: other boots
    run(tmp_path)
    db = sqlite3.connect(tmp_path / "data" / "store.sqlite")
    for table in ("occupancy", "telemetry", "calls"):
        lo, hi = db.execute(f"SELECT MIN(boot), MAX(boot) FROM {table}").fetchone()
        assert lo is None or first <= lo <= hi < end, table
    # Device health is the live messages' to tell: generated ones leave it empty.
    health = db.execute(
        "SELECT COUNT(*), COUNT(last_seen_ms), COUNT(boot), SUM(boots) FROM devices"
    ).fetchone()
    assert health == (20, 0, 0, 0)
    assert db.execute("SELECT COUNT(*) FROM seq_audit").fetchone()[0] == 0


def _live_record(device: str, room: str, t_ms: int) -> Record:
    msg = Occupancy(v=1, boot=3, seq=1, ts=t_ms, occupied=True, source="door")
    return Record(device, room, Kind.OCCUPANCY, msg, t_ms)


def test_the_cli_refuses_a_span_that_holds_live_data(tmp_path: Path) -> None:
    """Generated sessions must not interleave with a live node's in the same
    room and hours: refused with the way out, nothing written; --force writes."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MAMAROOM_DATA_DIR": str(tmp_path / "data")}
    live_at = int(datetime(2026, 9, 20, 10, 0, tzinfo=TZ).timestamp() * 1000)

    async def add_live() -> None:
        store = EmbeddedStore(tmp_path / "data" / "store.sqlite")
        await store.open()
        await store.series.write([_live_record(ROOMS[0].device or "", ROOMS[0].id, live_at)])
        await store.close()

    asyncio.run(add_live())

    def generate_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "history",
                "generate",
                "--rooms",
                "3",
                "--days",
                "10",
                *args,
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stored() -> int:
        db = sqlite3.connect(tmp_path / "data" / "store.sqlite")
        return int(db.execute("SELECT COUNT(*) FROM occupancy").fetchone()[0])

    out = generate_cli("--end", "2026-09-25")
    assert out.returncode == 1, out.stderr
    message = " ".join(out.stderr.split())
    assert "2026-09-20 10:00" in message and "--end 2026-09-20" in message
    assert "--force" in message and stored() == 1
    # Before the live data: written.
    out = generate_cli("--end", "2026-09-20")
    assert out.returncode == 0, out.stderr
    assert stored() > 1
    # Over it with --force: written (the operator's choice).
    before = stored()
    assert generate_cli("--end", "2026-09-25", "--force").returncode == 0
    assert stored() > before


def test_history_beside_live_nodes_leaves_them_alone(
    services: Services, device_factory: DeviceFactory
) -> None:
    """Issue 14: `history generate` beside a running demo made live messages
    duplicates (rooms froze). Live rooms keep changing, nothing is a
    duplicate, and the nodes' health stays their own."""
    import subprocess
    import sys

    dev = device_factory("dev-a")
    dev.telemetry()
    dev.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")
    out = subprocess.run(
        [sys.executable, "-m", "cli", "history", "generate", "--days", "3", "--rooms", "3"],
        env=services.env,
        cwd=services.workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for occupied in (False, True, False):
        dev.occupancy(occupied)
        services.wait_room_state("T1-0101", "occupied" if occupied else "free")
    metrics = services.metrics()
    assert metrics["mamaroom_gateway_duplicates_total"] == 0
    assert metrics['mamaroom_gateway_stored_total{kind="occupancy"}'] == 4
    token = services.login("admin", Services.ADMIN_PASSWORD)
    health = services.http.get("/api/devices", headers={"Authorization": f"Bearer {token}"}).json()
    dev_a = next(d for d in health["devices"] if d["device"] == "dev-a")
    assert (dev_a["reboots"], dev_a["fw"], dev_a["reset_reason"]) == (0, "test", None)


def test_the_cli_adds_past_calls_with_response_times(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MAMAROOM_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "history",
            "generate",
            "--days",
            "90",
            "--rooms",
            "30",
            "--end",
            "2026-10-01",
            "--seed",
            "5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    db = sqlite3.connect(tmp_path / "data" / "server.sqlite")
    rows = db.execute(
        "SELECT raised_at_ms, acknowledged_at_ms, arrived_at_ms, resolved_at_ms,"
        " status FROM alerts WHERE kind='call'"
    ).fetchall()
    assert len(rows) >= 3 and all(r[4] == "resolved" for r in rows)
    for raised, ack, arrived, resolved, _ in rows:
        assert raised < ack <= arrived <= resolved
        assert 5_000 <= ack - raised <= 600_000  # acknowledged within 5 s .. 10 min
    store = sqlite3.connect(tmp_path / "data" / "store.sqlite")
    presses = store.execute("SELECT COUNT(*) FROM calls WHERE action='press'").fetchone()[0]
    assert presses == len(rows)  # every alert has its raw call events, and no more
    assert f"{len(rows)} past calls as alerts" in out.stdout.replace("\n", " ")
