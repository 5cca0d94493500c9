"""`mamaroom demo` with no broker at the configured URL starts its embedded one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import ROOT, free_port, wait_for


def test_demo_starts_an_embedded_broker_and_serves_rooms(tmp_path: Path) -> None:
    http_port, mqtt_port = free_port(), free_port()
    env = {
        **os.environ,
        "MAMAROOM_MQTT__URL": f"mqtt://127.0.0.1:{mqtt_port}",  # nothing listens here
        "MAMAROOM_HTTP__PORT": str(http_port),
        "MAMAROOM_GATEWAY__METRICS_PORT": str(free_port()),
        "MAMAROOM_DATA_DIR": str(tmp_path / "data"),
    }
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--rooms", "6", "--speed", "60"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def output() -> str:
        return (tmp_path / "demo.log").read_text(errors="replace")[-4000:]

    try:
        wait_for(
            lambda: "started an embedded one" in output(),
            timeout=60,
            what="embedded broker",
            detail=output,
        )
        url = f"http://127.0.0.1:{http_port}/api/rooms"
        rooms = wait_for(
            lambda: (
                (rs := httpx.get(url, timeout=5).json())
                and sum(r["state"] != "offline" for r in rs) == 6
                and rs
            ),
            timeout=90,
            what="6 simulated rooms live",
            detail=output,
        )
        assert len(rooms) == 190
        page = httpx.get(f"http://127.0.0.1:{http_port}/", timeout=5)
        assert page.status_code == 200 and "母婴室" in page.text
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        code = demo.wait(timeout=60)
        log.close()
    assert code == 0, output()
    assert "stopped" in output()
