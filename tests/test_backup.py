"""`mamaroom backup` while the services write, `mamaroom restore` after they
stop: alerts, accounts, registry and stored messages come back as they were
at the backup, and what came after is gone (kept aside)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Device, Mosquitto, Services, wait_for


def mamaroom(svc: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=svc.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def occupancy_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("SELECT count(*) FROM occupancy").fetchone()[0])


@pytest.fixture
def busy_services(broker: Mosquitto, tmp_path: Path, rooms_csv: Path) -> Iterator[Services]:
    """The services, with the gateway's per-device budget lifted: the test's
    writer sends as fast as it can, far beyond what a node may (after the
    default burst of 2,000, the rest would be dropped as `rate_limited` and
    nothing more stored while a slow backup runs)."""
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_GATEWAY__DEVICE_BURST="10000000",
        MAMAROOM_GATEWAY__DEVICE_RATE_PER_S="1000000",
    ).start()
    yield svc
    svc.stop()


def test_backup_online_then_restore(busy_services: Services, tmp_path: Path) -> None:
    services = busy_services
    data = tmp_path / "data"
    dev = Device(services.broker.port, "dev-a")
    try:
        dev.call("press", "before-backup")
        wait_for(lambda: services.admin("GET", "/api/alerts").json(), what="the alert")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "user",
                "add",
                "nurse-li",
                "--role",
                "staff",
                "--password-stdin",
            ],
            input="a long password\n",
            text=True,
            env=services.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        # A writer keeps the gateway busy while the backup runs.
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                dev.occupancy(dev.seq % 2 == 0)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        wait_for(lambda: occupancy_rows(data / "store.sqlite") > 50, what="rows being written")
        out = mamaroom(services, "backup", str(tmp_path / "backups"))
        stop.set()
        writer.join(30)
        assert out.returncode == 0, out.stderr
        folder = Path(out.stdout.strip())
        manifest = json.loads((folder / "manifest.json").read_text())
        assert {f["file"] for f in manifest["files"]} == {"server.sqlite", "store.sqlite"}
        at_backup = occupancy_rows(folder / "store.sqlite")
        assert at_backup > 50
        # After the backup: rows and one more call (another room: a press in a
        # room with an open call joins it), which the restore must undo. Rows
        # are written here too, not only left to the writer's race with the
        # end of the backup.
        for _ in range(3):
            dev.occupancy(dev.seq % 2 == 0)
        other = Device(services.broker.port, "dev-b")
        other.call("press", "after-backup")
        other.close()
        wait_for(
            lambda: len(services.admin("GET", "/api/alerts").json()) == 2, what="the second alert"
        )
        wait_for(
            lambda: occupancy_rows(data / "store.sqlite") > at_backup,
            what="the writer's last rows stored",
        )
        refused = mamaroom(services, "restore", str(folder))
        assert refused.returncode == 2 and "stop the gateway and the server" in flat(refused.stderr)
    finally:
        dev.close()
        services.stop()
    restored = mamaroom(services, "restore", str(folder))
    assert restored.returncode == 0, restored.stderr
    assert list(data.glob("before-restore-*/server.sqlite"))  # the newer files, kept aside
    assert occupancy_rows(data / "store.sqlite") == at_backup
    services.http = type(services.http)(base_url=services.base_url, timeout=10)
    services.start_server()
    try:
        alerts = services.admin("GET", "/api/alerts").json()
        assert [a["call_id"] for a in alerts if a["kind"] == "call"] == ["before-backup"]
        assert services.login("nurse-li", "a long password")
        assert services.room("T1-0101")["device"] == "dev-a"
    finally:
        services.server.stop()
    # A folder that is not a backup is refused, and nothing is touched.
    bogus = mamaroom(services, "restore", str(tmp_path))
    assert bogus.returncode == 2 and "not a mamaroom backup" in flat(bogus.stderr)
    assert occupancy_rows(data / "store.sqlite") == at_backup
