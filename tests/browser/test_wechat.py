"""The mothers' page in WeChat's in-app browser (its user agent), in real
Chromium, with the server pointed at the WeChat stand-in: the menu link,
the page without EventSource (it polls), "有空位时通知我（微信）", WeChat's
silent OAuth and back, the subscribe button (the stand-in's open tag), and
the service account's message when the room frees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import PHONE
from tests.support import DeviceFactory, Mosquitto, Services, wait_for
from tests.test_wechat import MENU_LINK, WECHAT_UA
from tests.wechat_standin import TEMPLATE_ID, WechatStandin

LIVE_TIMEOUT = 30_000  # ms; the machine is shared and slow, never a timing assert


@pytest.fixture
def standin() -> Iterator[WechatStandin]:
    s = WechatStandin()
    yield s
    s.close()


@pytest.fixture
def wechat_services(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, standin: WechatStandin
) -> Iterator[Services]:
    svc = Services(broker, tmp_path, rooms_csv, influx=None, **standin.env()).start()
    yield svc
    svc.stop()


@pytest.fixture
def in_wechat(browser: Browser, standin: WechatStandin) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        viewport=PHONE,
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=WECHAT_UA,
    )

    def subscribe(template: str) -> str:
        """WeChat's popup, answered "allow" by the mother at the phone."""
        standin.accept(standin.user, template)
        return "accept"

    ctx.expose_function("__wxStandinSubscribe", subscribe)
    # Some in-app browsers have no EventSource: the page must poll instead.
    ctx.add_init_script("delete window.EventSource")
    yield ctx
    ctx.close()


def test_in_wechat_the_page_offers_wechat_and_the_message_comes(
    wechat_services: Services,
    standin: WechatStandin,
    device_factory: DeviceFactory,
    in_wechat: BrowserContext,
    page: Page,
) -> None:
    svc = wechat_services
    node = device_factory("dev-a")
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")
    phone = in_wechat.new_page()
    errors: list[str] = []
    phone.on("pageerror", lambda e: errors.append(str(e)))
    phone.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.text else None,
    )

    # The service account's menu link: the page knows where she is.
    phone.goto(svc.base_url + MENU_LINK)
    expect(phone.locator("#my-building")).to_have_value("测试楼")
    expect(phone.locator("#my-floor")).to_have_value("1")
    room = phone.locator("#rooms [data-room='T1-0101']")
    expect(room).to_have_attribute("data-state", "occupied", timeout=LIVE_TIMEOUT)  # polled
    expect(phone.locator("#live")).to_have_text("● 实时")
    remind = phone.locator("#remind")
    expect(remind).to_have_text("有空位时通知我（微信）")

    # The tap: WeChat's silent OAuth and back, then WeChat's subscribe button.
    standin.user = "o-mother-dora"
    remind.click()
    subscribe = phone.locator("#wx-subscribe")
    expect(subscribe).to_be_visible(timeout=LIVE_TIMEOUT)
    assert phone.url == svc.base_url + MENU_LINK  # back where she was, #wx-ready gone
    expect(phone.locator("#remind-state")).to_contain_text("同意接收一次")
    expect(subscribe).to_contain_text("同意接收通知")
    config = phone.evaluate("window.__wxStandin.config")
    assert config["openTagList"] == ["wx-open-subscribe"]
    assert standin.signature_ok(config, svc.base_url + MENU_LINK)
    assert subscribe.get_attribute("template") == TEMPLATE_ID
    subscribe.click()
    expect(phone.locator("#remind-state")).to_contain_text("已开启微信提醒", timeout=LIVE_TIMEOUT)
    expect(remind).to_have_attribute("aria-pressed", "true")
    expect(subscribe).to_be_hidden()
    # Every string of it in English too.
    phone.click("#lang")
    expect(phone.locator("#remind-state")).to_contain_text("WeChat reminder on")
    expect(remind).to_have_text("Cancel reminder")

    # The room frees: the service account's message, once.
    node.occupancy(False)
    [message] = wait_for(
        lambda: standin.sent_to("o-mother-dora"),
        timeout=LIVE_TIMEOUT / 1000,
        what="the WeChat message",
        detail=svc.logs,
    )
    assert message["page"] == f"{svc.base_url}/r/T1-0101"
    assert message["data"]["thing1"] == {"value": "测试楼1层母婴室"}  # she agreed in Chinese
    # The open page tells her too, at its next poll.
    expect(phone.locator("#remind-state")).to_contain_text("A room is free", timeout=LIVE_TIMEOUT)
    assert [e for e in errors if "Content Security Policy" in e or "Error" in e] == [], errors

    # Outside WeChat the same server offers the in-page and Web Push reminder.
    page.goto(svc.base_url + MENU_LINK)
    expect(page.locator("#remind")).to_have_text("附近有空位时提醒我")
    assert page.evaluate("typeof window.wx") == "undefined"  # no JS-SDK loaded
