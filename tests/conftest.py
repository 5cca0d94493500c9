from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Device, DeviceFactory, Mosquitto, Services, write_rooms_csv

ROOMS = [("T1-0101", "dev-a"), ("T1-0201", "dev-b"), ("T1-0301", None)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def rooms_csv(tmp_path: Path) -> Path:
    return write_rooms_csv(tmp_path / "rooms.csv", ROOMS)


@pytest.fixture
def services(broker: Mosquitto, tmp_path: Path, rooms_csv: Path) -> Iterator[Services]:
    svc = Services(broker, tmp_path, rooms_csv).start()
    yield svc
    svc.stop()


@pytest.fixture
def device_factory(broker: Mosquitto) -> Iterator[DeviceFactory]:
    made: list[Device] = []

    def make(device: str, boot: int = 1) -> Device:
        d = Device(broker.port, device, boot=boot)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture
def vapid() -> tuple[str, str]:
    """Web Push keys, made as an operator makes them."""
    out = subprocess.run(
        [sys.executable, "-m", "cli", "webpush", "keys"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    keys = dict(line.split(" = ") for line in out.splitlines() if " = " in line)
    return keys["vapid_public_key"].strip('"'), keys["vapid_private_key"].strip('"')
