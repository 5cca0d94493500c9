"""Phone-size screenshots (390×844) of each page for the README, taken from the
real system with the park's own rooms CSV (190 rooms): docs/screenshots/."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect

from mamaroom.contract import Kind, device_topic
from mamaroom.registry import read_rooms_csv, write_rooms_csv
from tests.browser.conftest import axe_violations, screenshot
from tests.browser.test_staff import login
from tests.support import ROOT, DeviceFactory, Services, wait_for

LIVE_TIMEOUT = 30_000


@pytest.fixture
def rooms_csv(tmp_path: Path) -> Path:
    """The park's rooms, open all day so the pictures do not depend on the hour
    the tests run at (two keep their hours, so 'closed' can appear at night)."""
    rooms = read_rooms_csv(ROOT / "site" / "rooms.csv")
    rooms = [r.model_copy(update={"hours": ""}) if i % 60 else r for i, r in enumerate(rooms)]
    path = tmp_path / "rooms.csv"
    path.write_text(write_rooms_csv(rooms), encoding="utf-8")
    return path


@pytest.fixture
def park(services: Services, rooms_csv: Path) -> Iterator[list[str]]:
    """Occupancy for most rooms' nodes (seeded), a few left silent (offline)."""
    rng = random.Random(6)
    devices = [r.device for r in read_rooms_csv(rooms_csv) if r.device]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="screenshot-park")
    client.connect("127.0.0.1", services.broker.port)
    client.loop_start()
    reported = []
    for i, device in enumerate(devices):
        if i % 23 == 7:
            continue  # silent: its room must show "status unknown"
        body = {
            "v": 1,
            "boot": 1,
            "seq": 1,
            "ts": None,
            "occupied": rng.random() < 0.45,
            "source": "door",
        }
        topic = device_topic(device, Kind.OCCUPANCY)
        client.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
        reported.append(device)
    wait_for(
        lambda: (
            sum(r["state"] != "offline" for r in services.http.get("/api/rooms").json())
            >= len(reported)
        ),
        timeout=60,
        what="park room states",
        detail=services.logs,
    )
    yield reported
    client.loop_stop()
    client.disconnect()


def test_screenshots(
    services: Services, park: list[str], device_factory: DeviceFactory, page: Page
) -> None:
    page.goto(services.base_url + "/")
    page.select_option("#my-building", "软件园1号楼")
    page.select_option("#my-floor", "3")
    expect(page.locator("#rooms [data-room]").first).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(page.locator("#rooms [data-state=offline]").first).to_be_attached()
    assert axe_violations(page) == []
    screenshot(page, "mothers")

    page.goto(services.base_url + "/r/SP1-0301")
    expect(page.locator(".big-state")).to_be_visible(timeout=LIVE_TIMEOUT)
    screenshot(page, "room")

    node = device_factory("n-sp1-0301")
    node.call("press", "shot-1")
    page.goto(services.base_url + "/staff")
    login(page, services)
    expect(page.locator("[data-alert][data-status=open]")).to_be_visible(timeout=LIVE_TIMEOUT)
    screenshot(page, "staff")
