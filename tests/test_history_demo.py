"""`mamaroom demo` seeds weeks of history in the background (issue 14: the
trends of a fresh demo were empty, every chart 0 and uptime 0.0 %)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, Mosquitto, free_port, wait_for

ROOMS = 12


class Demo:
    """One `mamaroom demo` run against a private Mosquitto, in a data dir."""

    def __init__(
        self, tmp_path: Path, broker: Mosquitto, data_dir: Path, name: str, rooms: int = ROOMS
    ) -> None:
        self.http_port, self.metrics_port = free_port(), free_port()
        self.log_path = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "MAMAROOM_MQTT__URL": broker.url,
            "MAMAROOM_HTTP__PORT": str(self.http_port),
            "MAMAROOM_GATEWAY__METRICS_PORT": str(self.metrics_port),
            "MAMAROOM_DATA_DIR": str(data_dir),
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "demo", "--rooms", str(rooms), "--speed", "60"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return self.output()[-4000:]

    def wait_seeded(self) -> str:
        """The demo's last word on its history."""
        found = wait_for(
            lambda: re.search(r"history: (seeded|already there|not seeded).*", self.output()),
            timeout=300,
            interval=0.5,
            what="history seeded",
            detail=self.tail,
        )
        return found.group(0)

    def token(self) -> str:
        password = wait_for(
            lambda: re.search(r"admin / (\S+)", self.output()),
            timeout=120,
            what="the admin login on the panel",
            detail=self.tail,
        ).group(1)
        r = self.http.post("/api/auth/token", data={"username": "admin", "password": password})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def trend(self, name: str, token: str, **params: str) -> Any:
        r = self.http.get(
            f"/api/trends/{name}", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        r.raise_for_status()
        return r.json()

    def duplicates(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        found = re.search(r"^mamaroom_gateway_duplicates_total (\S+)$", text, re.MULTILINE)
        assert found is not None, text
        return float(found.group(1))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.http.close()


def test_a_fresh_demo_has_weeks_of_trends(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    data = tmp_path / "data"
    try:
        demo = Demo(tmp_path, broker, data, "first")
        try:
            said = demo.wait_seeded()
            assert said.startswith("history: seeded"), demo.tail()
            out = demo.output()
            # Seeding runs beside the live demo: the panel did not wait for it.
            assert out.index("mamaroom is running") < out.index("history: seeded")
            token = demo.token()
            today = date.today()
            weeks = {
                "from": (today - timedelta(days=28)).isoformat(),
                "to": (today - timedelta(days=1)).isoformat(),
            }
            heatmap = demo.trend("heatmap", token, **weeks)
            # The busiest hour, over all 190 rooms of the site (12 of them seeded).
            assert heatmap["max"] > 0.1 * ROOMS / 190, heatmap["max"]
            sessions = demo.trend("sessions", token, **weeks)
            assert sessions["lengths"]["sessions"] > 10 * ROOMS
            ranked = demo.trend("rooms", token, **weeks)
            assert sum(r["sessions"] > 0 for r in ranked["rooms"]) == ROOMS
            # Reports every 30 minutes, the nodes' own interval: near 100 %, not 3.2 %.
            week = {
                "from": (today - timedelta(days=7)).isoformat(),
                "to": (today - timedelta(days=1)).isoformat(),
            }
            uptime = demo.trend("uptime", token, **week)
            seeded = [d for d in uptime["devices"] if d["reports"]]
            assert len(seeded) == ROOMS
            assert min(d["uptime"] for d in seeded) > 0.8, seeded
            assert sum(d["uptime"] for d in seeded) / ROOMS > 0.95
            assert all(d["reboots"] < 10 for d in seeded)  # boot changes, not 2**40
            assert demo.duplicates() == 0
        finally:
            code = demo.stop()
        assert code == 0, demo.tail()
        # Again in the same data dir: it fills on from where the first run's
        # data ends; nothing collides with the first run's history or live data.
        again = Demo(tmp_path, broker, data, "second")
        try:
            said = again.wait_seeded()
            assert "not seeded" not in said, again.tail()
            assert "history: seeding" in again.output()
            wait_for(
                lambda: "mamaroom is running" in again.output(),
                timeout=120,
                what="the second demo running",
                detail=again.tail,
            )
            assert again.duplicates() == 0
        finally:
            code = again.stop()
        assert code == 0, again.tail()
    finally:
        broker.stop()


def _seeders(data_dir: Path) -> list[int]:
    """Processes writing this data dir's demo history (`history seed-demo`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and b"seed-demo" in (proc / "cmdline").read_bytes()
                and str(data_dir).encode() in (proc / "environ").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def test_stopping_the_demo_while_it_seeds_stops_the_seeding(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    data = tmp_path / "data"
    try:
        # All 190 rooms: their past takes long enough to stop in the middle of it.
        demo = Demo(tmp_path, broker, data, "stopped", rooms=190)
        try:
            wait_for(
                lambda: "history: seeding" in demo.output(),
                timeout=120,
                what="seeding started",
                detail=demo.tail,
            )
            wait_for(lambda: _seeders(data), timeout=30, what="the seeding process")
        finally:
            code = demo.stop()  # Ctrl-C, seeding or not
        assert code == 0, demo.tail()
        assert "✓ stopped" in demo.output() and "history: seeded" not in demo.output()
        wait_for(lambda: not _seeders(data), timeout=30, what="the seeding process gone")
    finally:
        broker.stop()
