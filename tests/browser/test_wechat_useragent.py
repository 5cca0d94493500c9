"""The mothers' pages as WeChat's in-app browser opens them (a menu link of
the union's official account, a QR code scanned in WeChat): its Android
user agent, with and without EventSource (some of its versions lack it:
then the page polls, common.js), and behind the proxy's public listener
(X-Mamaroom-Surface: public, as nginx sends it), where the staff link goes
and the privacy notice stays."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from server.surfaces import SURFACE_HEADER
from tests.browser.conftest import PHONE
from tests.support import DeviceFactory, Services

LIVE_TIMEOUT = 30_000  # ms; polling every 10 s on a shared machine
#: WeChat 8.0 on Android (its XWEB/Chromium web view), as it sends it.
WECHAT_ANDROID = (
    "Mozilla/5.0 (Linux; Android 13; V2227A Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/111.0.5563.116 Mobile Safari/537.36 XWEB/1110005 "
    "MMWEBSDK/20230805 MMWEBID/2615 MicroMessenger/8.0.42.2460(0x28002A3B) WeChat/arm64 "
    "Weixin NetType/WIFI Language/zh_CN ABI/arm64"
)
#: What WeChat's browser lacks on some phones: the stream, and Web Push always.
NO_EVENTSOURCE = "delete window.EventSource; delete window.PushManager;"


@pytest.fixture
def wechat(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        viewport=PHONE,
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=WECHAT_ANDROID,
    )
    yield ctx
    ctx.close()


def open_page(ctx: BrowserContext, *, eventsource: bool) -> Page:
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.text else None,
    )
    page.errors = errors  # type: ignore[attr-defined]  # Page has no slot for them: carried on it
    if not eventsource:
        page.add_init_script(NO_EVENTSOURCE)
    return page


def no_errors(page: Page) -> None:
    errors = page.errors  # type: ignore[attr-defined]  # set by the page maker above
    assert [e for e in errors if "Content Security Policy" in e or "Error" in e] == [], errors


@pytest.mark.parametrize("eventsource", [True, False], ids=["eventsource", "polling"])
def test_the_mothers_pages_in_wechat(
    services: Services, device_factory: DeviceFactory, wechat: BrowserContext, eventsource: bool
) -> None:
    a, b = device_factory("dev-a"), device_factory("dev-b")
    a.occupancy(False)
    b.occupancy(True)
    services.wait_room_state("T1-0101", "free")
    services.wait_room_state("T1-0201", "occupied")

    page = open_page(wechat, eventsource=eventsource)
    page.goto(services.base_url + "/")
    assert "MicroMessenger" in page.evaluate("navigator.userAgent")
    assert page.evaluate("'EventSource' in window") is eventsource
    free_room = page.locator("#rooms [data-room='T1-0101']")
    expect(free_room).to_have_attribute("data-state", "free", timeout=LIVE_TIMEOUT)
    expect(page.locator("#rooms [data-room='T1-0201']")).to_have_attribute("data-state", "occupied")
    expect(page.locator("#summary")).to_contain_text("1 间空闲")
    expect(page.locator("#live")).to_have_text("● 实时")
    page.select_option("#my-building", "测试楼")
    page.select_option("#my-floor", "2")
    expect(page.locator("#nearest-list [data-room='T1-0101']")).to_be_visible()
    # Live (the stream) or at the next poll (10 s): the same page, not reloaded.
    page.evaluate("window.__marker = 'same page'")
    a.occupancy(True)
    expect(free_room).to_have_attribute("data-state", "occupied", timeout=LIVE_TIMEOUT)
    assert page.evaluate("window.__marker") == "same page"
    # The privacy notice, in both languages.
    expect(page.locator("#privacy")).to_contain_text("隐私说明")
    expect(page.locator("#privacy")).to_contain_text("2 小时后失效并删除")
    page.click("#lang")
    expect(page.locator("#privacy")).to_contain_text("lapses after 2 hours")
    page.click("#lang")
    no_errors(page)

    # A door's QR code scanned in WeChat: the room's own page.
    room = open_page(wechat, eventsource=eventsource)
    room.goto(services.base_url + "/r/T1-0201")
    state = room.locator(".big-state")
    expect(state).to_have_text("使用中", timeout=LIVE_TIMEOUT)
    b.occupancy(False)
    expect(state).to_have_text("空闲", timeout=LIVE_TIMEOUT)
    expect(room.locator("#privacy")).to_contain_text("openid")
    no_errors(room)


def test_wechat_through_the_public_listener(
    services: Services, device_factory: DeviceFactory, wechat: BrowserContext
) -> None:
    """As nginx's public listener passes it: every request marked public. The
    pages work, with no link to the staff console (404 there)."""
    a = device_factory("dev-a")
    a.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    wechat.set_extra_http_headers({SURFACE_HEADER: "public"})
    for eventsource in (True, False):
        page = open_page(wechat, eventsource=eventsource)
        page.goto(services.base_url + "/")
        expect(page.locator("#rooms [data-room='T1-0101']")).to_have_attribute(
            "data-state", "free", timeout=LIVE_TIMEOUT
        )
        expect(page.locator("#staff-link")).to_be_hidden()
        expect(page.locator("#privacy")).to_be_visible()
        room = page.goto(services.base_url + "/r/T1-0101")
        assert room is not None and room.status == 200
        expect(page.locator(".big-state")).to_have_text("空闲", timeout=LIVE_TIMEOUT)
        expect(page.locator("#staff-link")).to_be_hidden()
        no_errors(page)
        page.close()
    # The same page on the intranet keeps its staff link.
    wechat.set_extra_http_headers({})
    page = open_page(wechat, eventsource=True)
    page.goto(services.base_url + "/")
    expect(page.locator("#rooms [data-room='T1-0101']")).to_have_attribute(
        "data-state", "free", timeout=LIVE_TIMEOUT
    )
    expect(page.locator("#staff-link")).to_be_visible()
