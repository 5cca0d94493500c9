"""Real headless Chromium (Debian's `chromium`, driven by Playwright from PyPI;
never a downloaded browser) at phone size, against the real services."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright

from tests.support import ROOT

CHROMIUM = os.environ.get("MAMAROOM_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE: ViewportSize = {"width": 390, "height": 844}
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE = ROOT / "dashboard" / "vendor" / "axe.min.js"


# Package scope, not session: sync Playwright runs an event loop on the main
# thread while it is open, and every later test that calls asyncio.run()
# would fail ("cannot be called from a running event loop").
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        viewport=PHONE,
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.text else None,
    )
    pg.errors = errors  # type: ignore[attr-defined]  # Page has no slot for them: carried on it
    yield pg
    # A page that threw is broken even if what the test looked at rendered.
    assert [e for e in errors if "Content Security Policy" in e or "Error" in e] == [], errors


#: `make screenshots` sets this: only then are the README's pictures rewritten
#: (they are tracked; `make test` must leave the tree clean). Not MAMAROOM_*:
#: the services read that prefix as their config and refuse unknown keys.
WRITE_SCREENSHOTS = os.environ.get("WRITE_SCREENSHOTS") == "1"


def screenshot(page: Page, name: str) -> Path | None:
    """The page as docs/screenshots/<name>.png with `make screenshots`;
    otherwise taken (it must render) and thrown away."""
    if not WRITE_SCREENSHOTS:
        page.screenshot()
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core (from npm, `make vendor`) on the page: its serious and critical findings."""
    if not AXE.exists():
        pytest.fail("dashboard/vendor/axe.min.js is missing: run `make vendor`")
    page.add_script_tag(url="/vendor/axe.min.js")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]
