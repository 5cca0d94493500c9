"""The pages' public endpoints (site layout, predicted wait), the door QR
sheet, against a running server; the wait model on known numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mamaroom.storage.rollups import OccupancyEvent
from server.services.waits import WaitPredictor, session_lengths
from tests.support import ROOT, DeviceFactory, InfluxDB, Mosquitto, Services


def test_site_lists_buildings_floors_and_walking_minutes(services: Services) -> None:
    site = services.http.get("/api/site").json()
    assert site["buildings"] == [
        {"name": "测试楼", "name_en": "Test Bldg", "floors": [1, 2, 3], "rooms": 3}
    ]
    assert site["floor_minutes"] == 0.5 and site["near_minutes"] == 5


@pytest.mark.parametrize("backend", ["sqlite", "influxdb"])
def test_predicted_wait_from_stored_history(
    broker: Mosquitto,
    tmp_path: Path,
    rooms_csv: Path,
    device_factory: DeviceFactory,
    backend: str,
) -> None:
    # With InfluxDB the history is there only, not in the embedded file.
    influx = InfluxDB(tmp_path / "influxdb").start() if backend == "influxdb" else None
    services = Services(broker, tmp_path, rooms_csv, influx=influx)
    try:
        # History first: the server reads it once at start, then only what is new.
        generate = ["history", "generate", "--days", "14", "--rooms", "3", "--backend", backend]
        subprocess.run(
            [sys.executable, "-m", "cli", *generate],
            env=services.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=300,
        )
        services.start()
        _check_waits(services, device_factory)
    finally:
        services.stop()
        if influx is not None:
            influx.stop()


def _check_waits(services: Services, device_factory: DeviceFactory) -> None:
    # A boot the generated history did not use: its (boot, seq) are not duplicates.
    a, b = device_factory("dev-a", boot=10**9), device_factory("dev-b", boot=10**9)
    a.occupancy(True)
    b.occupancy(False)
    services.wait_room_state("T1-0101", "occupied")
    services.wait_room_state("T1-0201", "free")
    near = services.http.get("/api/wait", params={"building": "测试楼", "floor": 1}).json()
    # T1-0301 has no node: offline rooms are left out, never predicted.
    assert near["rooms"] == ["T1-0101", "T1-0201"] and near["available"] == ["T1-0201"]
    assert near["wait_minutes"] == 0

    b.occupancy(True)
    services.wait_room_state("T1-0201", "occupied")
    w = services.http.get("/api/wait", params={"rooms": "T1-0101,T1-0201"}).json()
    assert w["available"] == [] and w["sessions"] > 20
    # Generated sessions last 15-40 min; two rooms just taken: one frees within that.
    assert 3 <= w["wait_minutes"] <= 40, w
    assert w["wait_minutes"] <= w["within_minutes"] <= 60, w
    assert services.http.get("/api/wait").status_code == 422


async def test_the_wait_model_on_known_sessions() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    # Room A: ten past sessions of 10, 20, ..., 100 minutes, in the last days.
    events = []
    t = int((now - timedelta(days=5)).timestamp() * 1000)
    first = t
    for minutes in range(10, 110, 10):
        events += [OccupancyEvent("A", t, True), OccupancyEvent("A", t + minutes * 60_000, False)]
        t += 200 * 60_000
    assert session_lengths([(e.room, e.time_ms, e.occupied) for e in events], {})["A"] == [
        m * 60.0 for m in range(10, 110, 10)
    ]
    span = t - first
    events += [OccupancyEvent(e.room, e.time_ms + span, e.occupied) for e in events]

    class Store:
        async def occupancy_window(
            self, start_ms: int, end_ms: int
        ) -> tuple[list[OccupancyEvent], dict[str, bool]]:
            return [e for e in events if start_ms <= e.time_ms < end_ms], {}  # twenty sessions

        async def write_rollups(self, rows: object) -> None: ...

        async def rollups(self, start_ms: int, end_ms: int) -> list[object]:
            return []

    from mamaroom.contract import RoomStateName
    from server.services.rooms import PublicRoom

    room = PublicRoom(
        id="A",
        name="A",
        name_en="A",
        building="B",
        building_en="B",
        floor=1,
        device="d",
        state=RoomStateName.OCCUPIED,
        since=now - timedelta(minutes=45),
        access="public",
        company="",
        hours="",
        amenities=[],
        in_service=True,
        open_now=True,
        available=False,
    )
    # In use 45 min: of the sessions longer than that (50..100), half (50, 60,
    # 70) are over 25 min later, and all but the 100-minute ones 45 min later.
    predictor = WaitPredictor(Store(), 28, clock=lambda: now.timestamp())
    w = await predictor.estimate([room], now)
    assert w.wait_minutes == 25 and w.within_minutes == 45 and w.sessions == 20


def test_qr_sheet_one_code_per_door(rooms_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "qr"
    env = {
        "MAMAROOM_ROOMS_CSV": str(rooms_csv),
        "MAMAROOM_DATA_DIR": str(tmp_path / "data"),
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "qr",
            "--out",
            str(out),
            "--base-url",
            "https://mamaroom.park.example/",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    sheet = (out / "index.html").read_text(encoding="utf-8")
    for room in ("T1-0101", "T1-0201", "T1-0301"):
        assert f"https://mamaroom.park.example/r/{room}" in sheet
        assert (out / "svg" / f"{room}.svg").read_text().startswith("<?xml")
    assert sheet.count('class="door"') == 3 and "测试楼1层母婴室" in sheet
    assert "warning" not in r.stderr  # a real public address: no warning
    # The default address is this machine's own: printed on doors, it would open
    # nothing on a phone, and the command says so.
    local = subprocess.run(
        [sys.executable, "-m", "cli", "qr", "--out", str(tmp_path / "q2")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert local.returncode == 0 and "warning" in local.stderr
    assert "a phone cannot reach it" in " ".join(local.stderr.split())
