"""The mothers' pages in real Chromium, live over real Mosquitto, gateway and server."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import axe_violations
from tests.support import DeviceFactory, Services, wait_for

LIVE_TIMEOUT = 30_000  # ms; the machine is shared and slow, never a timing assert


def test_the_list_changes_live_when_a_room_is_taken(
    services: Services, device_factory: DeviceFactory, page: Page
) -> None:
    a, b = device_factory("dev-a"), device_factory("dev-b")
    a.occupancy(False)
    b.occupancy(True)
    services.wait_room_state("T1-0101", "free")
    services.wait_room_state("T1-0201", "occupied")

    page.goto(services.base_url + "/")
    page.select_option("#my-building", "测试楼")
    page.select_option("#my-floor", "2")
    free_room = page.locator("#rooms [data-room='T1-0101']")
    expect(free_room).to_have_attribute("data-state", "free", timeout=LIVE_TIMEOUT)
    expect(free_room).to_contain_text("空闲")
    # No device: never shown as free, greyed with "status unknown".
    unknown = page.locator("#rooms [data-room='T1-0301']")
    expect(unknown).to_have_attribute("data-state", "offline")
    expect(unknown).to_contain_text("状态未知")
    expect(unknown).to_have_class(re.compile(r"\boffline\b"))
    expect(page.locator("#nearest-list [data-room='T1-0101']")).to_be_visible()
    page.evaluate("window.__marker = 'same page'")

    a.occupancy(True)  # over MQTT → gateway → server → SSE → the page
    expect(free_room).to_have_attribute("data-state", "occupied", timeout=LIVE_TIMEOUT)
    expect(free_room).to_contain_text("使用中")
    assert page.evaluate("window.__marker") == "same page"  # live, not reloaded
    expect(page.locator("#wait")).to_contain_text("都在使用中")

    # "Tell me when a room near me is free", with no account.
    page.click("#remind")
    expect(page.locator("#remind")).to_have_attribute("aria-pressed", "true")
    b.occupancy(False)
    # Polled from here, not wait_for_function: see test_trends.py.
    wait_for(
        lambda: page.evaluate("window.__reminders === 1"),
        timeout=LIVE_TIMEOUT / 1000,
        interval=0.2,
        what="the reminder",
    )
    expect(page.locator("#remind-state")).to_contain_text("有空位了")
    page.evaluate("window.scrollTo(0, 0)")

    assert axe_violations(page) == []
    # The remembered place survives a reload; English on request.
    page.reload()
    expect(page.locator("#my-building")).to_have_value("测试楼")
    page.click("#lang")
    expect(page.locator("#remind")).to_contain_text("Tell me")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#live")).to_have_text("● Live")  # not "● 实时"


def test_no_room_free_or_busy_near_her_is_said_plainly(services: Services, page: Page) -> None:
    """No room near her is free or in use (here: no node has reported yet):
    the notice says so and nothing more. It used to end in a stray "null"
    (replaceChildren turns a null into text), which test_languages caught."""
    page.goto(services.base_url + "/")
    page.select_option("#my-building", "测试楼")
    page.select_option("#my-floor", "1")
    wait = page.locator("#wait")
    expect(wait).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(wait).to_have_text(
        re.compile(r"^\s*(附近没有可用的母婴室。|附近的母婴室现在都未开放或状态未知。)\s*$")
    )


def test_without_eventsource_the_page_polls(
    services: Services, device_factory: DeviceFactory, page: Page
) -> None:
    """Some in-app browsers have no EventSource: the page polls the room list
    instead of staying on "正在加载…" for ever."""
    a = device_factory("dev-a")
    a.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    page.add_init_script("delete window.EventSource")
    page.goto(services.base_url + "/")
    room = page.locator("#rooms [data-room='T1-0101']")
    expect(room).to_have_attribute("data-state", "free", timeout=LIVE_TIMEOUT)
    a.occupancy(True)  # reaches the page at the next poll (10 s)
    expect(room).to_have_attribute("data-state", "occupied", timeout=LIVE_TIMEOUT)
    expect(page.locator("#live")).to_have_text("● 实时")


def test_without_eventsource_a_reminder_still_comes(
    services: Services, device_factory: DeviceFactory, page: Page
) -> None:
    """Polling hands the page snapshots, never single room changes: measured
    before, "tell me when a room is free" then never went off."""
    a, b = device_factory("dev-a"), device_factory("dev-b")
    a.occupancy(True)
    b.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")
    services.wait_room_state("T1-0201", "occupied")
    page.add_init_script("delete window.EventSource")
    page.goto(services.base_url + "/")
    page.select_option("#my-building", "测试楼")
    page.select_option("#my-floor", "2")
    expect(page.locator("#rooms [data-room='T1-0201']")).to_have_attribute(
        "data-state", "occupied", timeout=LIVE_TIMEOUT
    )
    page.click("#remind")
    expect(page.locator("#remind")).to_have_attribute("aria-pressed", "true")
    b.occupancy(False)  # seen at the next poll (10 s)
    wait_for(
        lambda: page.evaluate("window.__reminders === 1"),
        timeout=LIVE_TIMEOUT / 1000,
        interval=0.2,
        what="the reminder",
    )
    expect(page.locator("#remind-state")).to_contain_text("有空位了")


def test_a_room_page_from_its_door_qr_code(
    services: Services, device_factory: DeviceFactory, page: Page
) -> None:
    a = device_factory("dev-a")
    a.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    page.goto(services.base_url + "/r/T1-0101")
    state = page.locator(".big-state")
    expect(state).to_have_text("空闲", timeout=LIVE_TIMEOUT)
    a.occupancy(True)
    expect(state).to_have_text("使用中", timeout=LIVE_TIMEOUT)
    # The door's room tells the list where the mother is.
    assert page.evaluate("JSON.parse(localStorage.getItem('mamaroom.where')).building") == "测试楼"
    assert axe_violations(page) == []
    answer = page.goto(services.base_url + "/r/NO-SUCH")
    assert answer is not None and answer.status == 404  # a mistyped or old QR code
    expect(page.locator("#room")).to_contain_text("没有找到", timeout=LIVE_TIMEOUT)
    # Nothing "nearby" for a room that does not exist (it showed random rooms and "null").
    expect(page.locator("section.nearest")).to_be_hidden()
    assert "null" not in page.locator("main").inner_text()
