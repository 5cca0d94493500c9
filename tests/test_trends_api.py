"""The trends API on a running server: who may see it, JSON and CSV (with a
BOM, so Excel shows the Chinese names)."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from tests.support import ROOT, InfluxDB, Mosquitto, Services

ROUTES = ["heatmap", "rooms", "sessions", "calls", "uptime"]
PASSWORD = "a long password"


def add_user(services: Services, name: str, role: str) -> str:
    subprocess.run(
        [sys.executable, "-m", "cli", "user", "add", name, "--role", role, "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        env=services.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return services.login(name, PASSWORD)


def test_roles_json_and_csv(services: Services) -> None:
    staff = {"Authorization": f"Bearer {add_user(services, 'nurse', 'staff')}"}
    manager = {"Authorization": f"Bearer {add_user(services, 'boss', 'manager')}"}
    for route in ROUTES:
        assert services.http.get(f"/api/trends/{route}").status_code == 401
        assert services.http.get(f"/api/trends/{route}", headers=staff).status_code == 403
        r = services.http.get(f"/api/trends/{route}?format=csv", headers=staff)
        assert r.status_code == 403  # the CSV twin is no way around the role
    # A few days of history for the test's rooms, through the same write path.
    subprocess.run(
        [sys.executable, "-m", "cli", "history", "generate", "--days", "5", "--rooms", "3"],
        env=services.env,
        cwd=services.workdir,
        check=True,
        capture_output=True,
    )
    today = date.today()
    params = {
        "from": (today - timedelta(days=5)).isoformat(),
        "to": (today - timedelta(days=1)).isoformat(),
    }
    r = services.http.get("/api/trends/rooms", params=params, headers=manager)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["from"] == params["from"] and data["timezone"] == "Asia/Shanghai"
    assert [room["name"] for room in data["rooms"]] != []
    assert {room["name"] for room in data["rooms"]} <= {"测试楼1层母婴室", "测试楼2层母婴室"}
    assert sum(room["sessions"] for room in data["rooms"]) > 0
    for route in ROUTES:
        r = services.http.get(f"/api/trends/{route}", params=params, headers=manager)
        assert r.status_code == 200, (route, r.text)
        r = services.http.get(
            f"/api/trends/{route}", params={**params, "format": "csv"}, headers=manager
        )
        assert r.status_code == 200, (route, r.text)
        assert r.content.startswith(b"\xef\xbb\xbf"), route  # the BOM
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"] == (
            f'attachment; filename="trends-{route}-{params["from"]}_{params["to"]}.csv"'
        )
    r = services.http.get("/api/trends/rooms", params={**params, "format": "csv"}, headers=manager)
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == [
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
    assert "测试楼1层母婴室" in [row[2] for row in rows[1:]]
    r = services.http.get(
        "/api/trends/sessions",
        params={**params, "format": "csv", "table": "lengths"},
        headers=manager,
    )
    assert r.content.decode("utf-8-sig").splitlines()[0] == "from_min,to_min,sessions"
    # In the page's language: Chinese column names, and words among the values.
    for route in ROUTES:
        r = services.http.get(
            f"/api/trends/{route}",
            params={**params, "format": "csv", "lang": "zh"},
            headers=manager,
        )
        header = r.content.decode("utf-8-sig").splitlines()[0]
        assert re.search("[\u4e00-\u9fff]", header), (route, header)
        assert not re.search("[A-Za-z]{3,}", header), (route, header)
    r = services.http.get(
        "/api/trends/heatmap", params={**params, "format": "csv", "lang": "zh"}, headers=manager
    )
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["星期序号（0=周一）", "星期", "小时"]
    assert rows[1][:3] == ["0", "周一", "0"]
    r = services.http.get(
        "/api/trends/sessions", params={**params, "format": "csv", "lang": "zh"}, headers=manager
    )
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0] == ["日期", "使用次数", "使用时长（小时）", "日期类型"]
    assert {row[3] for row in rows[1:]} <= {"工作日", "周末", "节假日", "调休上班"}
    assert (
        services.http.get(
            "/api/trends/rooms", params={**params, "format": "csv", "lang": "fr"}, headers=manager
        ).status_code
        == 422
    )
    # The admin may, too; a range backwards is refused with a reason.
    admin = {"Authorization": f"Bearer {services.login('admin', Services.ADMIN_PASSWORD)}"}
    assert services.http.get("/api/trends/heatmap", headers=admin).status_code == 200
    r = services.http.get(
        "/api/trends/heatmap", headers=manager, params={"from": params["to"], "to": params["from"]}
    )
    assert r.status_code == 422 and "after" in r.json()["detail"]


def test_the_server_reads_trends_from_influxdb(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    """With `storage.backend = influxdb` the API answers from InfluxDB: the
    same numbers as the embedded store would give (the parity test), here
    through a running server."""
    influx = InfluxDB(tmp_path / "influxdb").start()
    # The generator sends telemetry every 30 minutes, live nodes every minute:
    # uptime goes by each node's own interval, nothing to configure.
    svc = Services(broker, tmp_path, rooms_csv, influx=influx)
    try:
        svc.start()
        manager = {"Authorization": f"Bearer {add_user(svc, 'boss', 'manager')}"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "history",
                "generate",
                "--days",
                "5",
                "--rooms",
                "3",
                "--backend",
                "influxdb",
            ],
            env=svc.env,
            cwd=svc.workdir,
            check=True,
            capture_output=True,
        )
        today = date.today()
        params = {
            "from": (today - timedelta(days=5)).isoformat(),
            "to": (today - timedelta(days=1)).isoformat(),
        }
        data = svc.http.get("/api/trends/sessions", params=params, headers=manager).json()
        assert data["lengths"]["sessions"] > 0, data
        rooms = svc.http.get("/api/trends/rooms", params=params, headers=manager).json()
        assert sum(r["sessions"] for r in rooms["rooms"]) >= data["lengths"]["sessions"]
        uptime = svc.http.get("/api/trends/uptime", params=params, headers=manager).json()
        assert uptime["uptime"] > 0.9, uptime
    finally:
        svc.stop()
        influx.stop()
