"""Every visible string in the chosen language (issue 14): each page, in
Chinese and in English, scanned for text of the other script.

Visible text is the text nodes a person sees (CSS-visible), the document
title, and the placeholder, aria-label, title and alt of visible elements
(what a screen reader says). Text inside an element whose `lang` names the
other language is that language on purpose (the language button shows the
other language's name) and is not counted.

In English nothing may be in Han script or CJK punctuation. In Chinese no
English word may show, beyond the allowed: room and device ids, the names
of protocols and formats (MQTT, ESPA, CSV, ...) and data the user typed
(the login name).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from mamaroom.contract import Kind
from mamaroom.registry import read_rooms_csv, write_rooms_csv
from tests.browser.conftest import PHONE
from tests.browser.test_staff import login
from tests.support import ROOT, DeviceFactory, Services, wait_for

LIVE_TIMEOUT = 30_000
CHARTS = ("c-heat", "c-rooms", "c-days", "c-lengths", "c-calls", "c-uptime")

#: Han ideographs (and extension A), CJK punctuation, full-width forms.
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
#: Ids and codes that are the same in both languages.
IDS = re.compile(
    r"https?://\S+"  # addresses
    r"|\b[A-Z]{1,4}\d*-\d{3,4}\b"  # room ids: T1-0101, SP1-0301
    r"|\b(?:dev|n)-[a-z0-9-]+\b"  # device ids: dev-a, n-sp1-0301
    r"|\b\d+(?:\.\d+)+\b"  # versions
)
#: Names of protocols, formats and standards, the same in Chinese text.
ALLOWED_ZH = {
    "MQTT",
    "ESPA",
    "CSV",
    "UTF",
    "QR",
    "API",
    "ID",
    "URL",
    "Wi",
    "Fi",
    "RSSI",
    "OTA",
    "P50",
    "P90",
    "IM",
    "SSE",
    "admin",
    "WeCom",
    "DingTalk",
    "IP",
    "openid",
}  # the privacy notice: WeChat's own word for a user's id
WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")

VISIBLE_TEXT = """() => {
  const lang = document.documentElement.lang.startsWith('zh') ? 'zh' : 'en';
  const own = (node) => {
    const marked = (node.nodeType === 1 ? node : node.parentElement).closest('[lang]');
    return !marked || marked.lang.startsWith('zh') === (lang === 'zh');
  };
  const seen = (el) => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  const out = [document.title];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el || ['SCRIPT', 'STYLE'].includes(el.tagName)) continue;
    // A select shows its options when opened.
    const box = el.tagName === 'OPTION' ? el.closest('select') : el;
    if (box && seen(box) && own(n)) out.push(n.textContent.trim());
  }
  for (const el of document.querySelectorAll('[placeholder],[aria-label],[title],[alt]')) {
    if (!seen(el) || !own(el)) continue;
    for (const a of ['placeholder', 'aria-label', 'title', 'alt']) {
      const v = el.getAttribute(a);
      if (v && v.trim()) out.push(v.trim());
    }
  }
  for (const el of document.querySelectorAll('input[type=submit],input[type=button]')) {
    if (seen(el) && own(el)) out.push(el.value);
  }
  return {lang, texts: out};
}"""


def open_details(page: Page) -> None:
    """What a tap on each folded section shows (a call's timeline)."""
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")


def foreign(lang: str, texts: list[str]) -> list[str]:
    """The strings of `texts` with text of the other script, as found."""
    found = []
    for text in texts:
        if lang == "en":
            if CJK.search(text):
                found.append(text)
            continue
        words = [w for w in WORD.findall(IDS.sub(" ", text)) if w not in ALLOWED_ZH]
        if words:
            found.append(f"{text!r}: {' '.join(words)}")
    return found


class Scan:
    """Collects what each page state shows in the wrong language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.findings: dict[str, list[str]] = {}

    def __call__(self, page: Page, where: str) -> None:
        result = page.evaluate(VISIBLE_TEXT)
        assert result["lang"] == self.lang, f"{where}: <html lang> is {result['lang']}"
        found = foreign(self.lang, result["texts"])
        if found:
            self.findings[where] = sorted(set(found))

    def report(self) -> str:
        return "\n".join(
            f"[{self.lang}] {where}:\n    " + "\n    ".join(found)
            for where, found in self.findings.items()
        )


@pytest.fixture
def rooms_csv(tmp_path: Path) -> Path:
    """The park's first rooms (public and company-only, with amenities and
    opening hours), one room without a node."""
    rooms = read_rooms_csv(ROOT / "site" / "rooms.csv")[:8]
    rooms[7] = rooms[7].model_copy(update={"device": None})
    path = tmp_path / "rooms.csv"
    path.write_text(write_rooms_csv(rooms), encoding="utf-8")
    return path


@pytest.fixture
def site(services: Services, device_factory: DeviceFactory) -> Iterator[Services]:
    """Something on every page: live rooms, an open call, an unknown device,
    weeks of history for the trends."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "history",
            "generate",
            "--days",
            "21",
            "--rooms",
            "7",
            "--telemetry-every",
            "60",
        ],
        env=services.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    node = device_factory("n-sp1-0101")
    node.publish(Kind.TELEMETRY, node.envelope(uptime_s=10, rssi=-60, heap_free=80_000, fw="1.2.0"))
    node.occupancy(True)
    device_factory("n-sp1-0102").occupancy(False)
    device_factory("n-sp1-0201").occupancy(False)
    device_factory("n-new-0001").occupancy(False)  # not in the registry: "to adopt"
    services.wait_room_state("SP1-0101", "occupied")
    services.wait_room_state("SP1-0201", "free")
    node.call("press", "lang-1")
    wait_for(lambda: services.admin("GET", "/api/devices").json()["unknown"], what="unknown")
    yield services


@pytest.fixture(params=["zh", "en"])
def lang_context(
    request: pytest.FixtureRequest, browser: Browser
) -> Iterator[tuple[str, BrowserContext]]:
    lang = request.param
    ctx = browser.new_context(
        viewport=PHONE,
        locale="zh-CN" if lang == "zh" else "en-US",
        timezone_id="Asia/Shanghai",
        device_scale_factor=1,
        is_mobile=True,
        has_touch=True,
    )
    ctx.add_init_script(f"try {{ localStorage.setItem('mamaroom.lang', '{lang}') }} catch (e) {{}}")
    yield lang, ctx
    ctx.close()


def test_every_page_in_one_language(
    site: Services, lang_context: tuple[str, BrowserContext]
) -> None:
    lang, ctx = lang_context
    scan = Scan(lang)
    page = ctx.new_page()
    base = site.base_url

    def visit(path: str, ready: Callable[[], None]) -> None:
        page.goto(base + path)
        ready()

    # The mothers' page: the whole list, then near a chosen floor.
    visit(
        "/",
        lambda: expect(page.locator("#rooms [data-room]").first).to_be_visible(
            timeout=LIVE_TIMEOUT
        ),
    )
    scan(page, "mothers' page")
    page.select_option("#my-building", index=1)
    page.select_option("#my-floor", index=1)
    expect(page.locator("#rooms [data-room]").first).to_be_visible(timeout=LIVE_TIMEOUT)
    scan(page, "mothers' page, near a floor")
    # A room's door page, and a room that does not exist.
    visit(
        "/r/SP1-0102",
        lambda: expect(page.locator(".big-state")).to_be_visible(timeout=LIVE_TIMEOUT),
    )
    scan(page, "room page")
    page.goto(base + "/r/NOPE-9999")
    scan(page, "unknown room page")

    # The staff console: its login, the open call, device health.
    page.goto(base + "/staff")
    expect(page.locator("#login-user")).to_be_visible(timeout=LIVE_TIMEOUT)
    scan(page, "staff login")
    login(page, site)
    expect(page.locator("[data-alert][data-status=open]")).to_be_visible(timeout=LIVE_TIMEOUT)
    open_details(page)
    scan(page, "staff console with a call")
    page.click("#unlock")
    page.locator("[data-alert][data-status=open] [data-action=ack]").click()
    expect(page.locator("[data-alert][data-status=acknowledged]")).to_be_visible(
        timeout=LIVE_TIMEOUT
    )
    open_details(page)
    scan(page, "staff console, call acknowledged")
    page.click("#tab-devices")
    expect(page.locator("#devices")).not_to_be_empty(timeout=LIVE_TIMEOUT)
    scan(page, "staff console, devices")

    # Trends with every chart drawn (the charts' own text is their aria-label).
    page.goto(base + "/trends")
    wait_for(
        lambda: page.evaluate(
            f"{list(CHARTS)}.every(id => ((window.__chartsRendered || {{}})[id] || 0) > 0)"
        ),
        timeout=60,
        interval=0.2,
        what="every chart drawn",
    )
    scan(page, "trends")

    # Admin, each tab.
    page.goto(base + "/admin")
    expect(page.locator("#tab-rooms")).to_be_visible(timeout=LIVE_TIMEOUT)
    for tab in ("rooms", "devices", "users", "roster"):
        page.click(f"#tab-{tab}")
        expect(page.locator(f"#panel-{tab}")).to_be_visible()
        page.wait_for_load_state("networkidle")
        scan(page, f"admin, {tab}")
    page.click("#tab-rooms")
    page.locator("#admin-rooms [data-room='SP1-0102'] button").click()  # its form
    expect(page.locator("#panel-rooms input").nth(3)).to_be_visible()
    scan(page, "admin, a room's form")
    assert not scan.findings, "text in the other language:\n" + scan.report()
