"""The staff console in real Chromium: a new call appears live, the alarm
repeats (fake clock) until one tap acknowledges it, and the node hears it."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import axe_violations
from tests.support import DeviceFactory, Services, wait_for

LIVE_TIMEOUT = 30_000


def login(page: Page, services: Services) -> None:
    page.fill("#login-user", "admin")
    page.fill("#login-pass", services.ADMIN_PASSWORD)
    page.click("#login button[type=submit]")
    expect(page.locator("#app")).to_be_visible(timeout=LIVE_TIMEOUT)


def test_a_call_rings_until_one_tap_acknowledges_it(
    services: Services, device_factory: DeviceFactory, page: Page
) -> None:
    node = device_factory("dev-a")
    node.occupancy(True)
    node.telemetry()
    services.wait_room_state("T1-0101", "occupied")

    # Timers and Date under Playwright's fake clock: 25 s pass in no time.
    page.clock.install()
    page.goto(services.base_url + "/staff")
    login(page, services)
    expect(page.locator("#live")).to_contain_text("实时", timeout=LIVE_TIMEOUT)
    gate = page.locator("#gate")
    expect(gate).to_be_visible()  # sound is locked until a tap
    page.click("#unlock")
    expect(gate).to_be_hidden()
    assert page.evaluate("MR.sound.unlocked") is True

    node.call("press", "c-1-1")
    card = page.locator("[data-alert][data-status=open]")
    expect(card).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(card).to_contain_text("紧急呼叫")
    expect(card).to_contain_text("测试楼1层母婴室")
    expect(card).to_contain_text("测试楼 · 1层")
    wait_for(lambda: "received" in node.statuses("c-1-1"), what="call_ack received")

    plays_at_call = page.evaluate("window.__alarmPlays")
    assert plays_at_call >= 1  # rings at once
    page.clock.run_for(25_000)
    plays = page.evaluate("window.__alarmPlays")
    assert plays - plays_at_call >= 3, f"alarm played {plays} times in 25 s"
    expect(card.locator(".since")).to_contain_text("25 秒")
    assert axe_violations(page) == []

    card.locator("[data-action=ack]").click()  # one tap
    wait_for(
        lambda: "acknowledged" in node.statuses("c-1-1"),
        what="the node receives call_ack acknowledged",
        detail=services.logs,
    )
    acked = page.locator("[data-alert][data-status=acknowledged]")
    expect(acked).to_contain_text("已接警", timeout=LIVE_TIMEOUT)
    expect(acked).to_contain_text("admin")
    silent = page.evaluate("window.__alarmPlays")
    page.clock.run_for(30_000)
    assert page.evaluate("window.__alarmPlays") == silent  # acknowledged: quiet

    acked.locator("details.tl summary").click()
    expect(acked.locator(".timeline")).to_contain_text("发起", timeout=LIVE_TIMEOUT)
    acked.locator("[data-action=resolve]").click()
    wait_for(lambda: "resolved" in node.statuses("c-1-1"), what="call_ack resolved")
    expect(page.locator("#no-alerts")).to_be_visible(timeout=LIVE_TIMEOUT)


def test_device_health_tab(services: Services, device_factory: DeviceFactory, page: Page) -> None:
    node = device_factory("dev-a")
    node.publish_raw(
        "mr/v1/dev/dev-a/telemetry",
        (b'{"v":1,"boot":1,"seq":99,"ts":null,"rssi":-88,"heap_free":12000,"fw":"1.2.3"}'),
    )
    stranger = device_factory("dev-new")
    stranger.occupancy(False)
    wait_for(
        lambda: services.admin("GET", "/api/devices").json()["unknown"],
        what="unknown device seen",
        detail=services.logs,
    )
    wait_for(
        lambda: any(
            d["rssi"] == -88 for d in services.admin("GET", "/api/devices").json()["devices"]
        ),
        what="telemetry stored",
        detail=services.logs,
    )
    page.goto(services.base_url + "/staff")
    login(page, services)
    page.click("#tab-devices")
    devices = page.locator("#devices")
    expect(devices).to_contain_text("dev-new", timeout=LIVE_TIMEOUT)
    expect(devices).to_contain_text("1.2.3")
    expect(devices).to_contain_text("-88")
    assert axe_violations(page) == []
