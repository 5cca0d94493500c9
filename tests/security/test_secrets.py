"""No default secrets outside the demo: no account exists until someone makes
one, a placeholder secret stops a process at start-up, and no file we ship
holds a secret value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mamaroom.config import NOT_SECRETS
from tests.support import ROOT, Mosquitto, Proc, free_port, wait_for, write_rooms_csv


@pytest.mark.parametrize(
    "env",
    [
        {"MAMAROOM_MQTT__PASSWORD": "changeme"},
        {"MAMAROOM_MQTT__PASSWORD": ""},  # an env file's `MAMAROOM_MQTT__PASSWORD=` left empty
        {"MAMAROOM_STORAGE__INFLUXDB__TOKEN": "..."},
        {"MAMAROOM_STORAGE__INFLUXDB__PASSWORD": "admin"},
    ],
)
@pytest.mark.parametrize("process", ["server", "gateway", "watchdog"])
def test_a_placeholder_secret_stops_every_process(env: dict[str, str], process: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli", process],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    key = next(iter(env)).removeprefix("MAMAROOM_").lower().replace("__", ".")
    assert line.startswith(f"config error: {key} ") and "placeholder" in line


def test_a_new_server_has_no_account_to_log_in_with(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    port = free_port()
    env = {
        **os.environ,
        "MAMAROOM_MQTT__URL": broker.url,
        "MAMAROOM_HTTP__PORT": str(port),
        "MAMAROOM_DATA_DIR": str(tmp_path / "data"),
        "MAMAROOM_PAGING__ALLOW_NO_TARGET": "true",
        "MAMAROOM_ROOMS_CSV": str(write_rooms_csv(tmp_path / "rooms.csv", [("T1-0101", None)])),
    }
    server = Proc("server", ["server"], env, tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{base}/healthz").status_code == 200,
            timeout=60,
            what="server up",
            detail=server.log_tail,
        )
        for name in ("admin", "root", "mamaroom", "staff"):
            for password in ("admin", "password", "mamaroom", "changeme", "1234567890", name):
                r = httpx.post(
                    f"{base}/api/auth/token", data={"username": name, "password": password}
                )
                assert r.status_code in (401, 429), (name, password, r.status_code)
        assert httpx.get(f"{base}/api/alerts").status_code == 401
    finally:
        server.stop()
        broker.stop()


SECRET_KEY = re.compile(r"(?i)^\s*([A-Z0-9_]*(PASSWORD|TOKEN)[A-Z0-9_]*)\s*[=:]\s*(.*?)\s*$")


def test_no_shipped_file_holds_a_secret() -> None:
    """Every `...PASSWORD=` / `token = ...` line we ship is empty, a
    placeholder the processes refuse, or commented out."""
    files = [*ROOT.joinpath("deploy").rglob("*"), ROOT / "site" / "mamaroom.example.toml"]
    checked = 0
    for path in files:
        if not path.is_file() or path.suffix in (".sh", ".md"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = SECRET_KEY.match(line)
            if m is None:
                continue
            checked += 1
            value = m.group(3).split("#")[0].strip().strip('"')
            assert value.lower() in NOT_SECRETS, f"{path}:{n}: a secret value: {line!r}"
    assert checked >= 5  # the env examples and the compose secrets were looked at
