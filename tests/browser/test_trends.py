"""The managers' trends page in real Chromium: charts drawn from generated
history through the trends API (docs/trends.md), CSV links, no a11y findings."""

from __future__ import annotations

import subprocess
import sys

from playwright.sync_api import Page, expect

from tests.browser.conftest import axe_violations, screenshot
from tests.browser.test_staff import login
from tests.support import ROOT, Services, wait_for

CHARTS = ("c-heat", "c-rooms", "c-days", "c-lengths", "c-calls", "c-uptime")


def test_trends_page_draws_every_chart_with_data(services: Services, page: Page) -> None:
    # Forty days of realistic history (occupancy, calls, telemetry) for the test rooms.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "history",
            "generate",
            "--days",
            "40",
            "--rooms",
            "3",
            "--telemetry-every",
            "60",
        ],
        env=services.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    page.goto(services.base_url + "/trends")
    login(page, services)
    # Polled from here: Playwright's wait_for_function re-evaluates its string,
    # which the page's CSP (no 'unsafe-eval') refuses now and then
    # (microsoft/playwright#36982); one page.evaluate at a time is allowed.
    wait_for(
        lambda: page.evaluate(
            f"{list(CHARTS)}.every(id => ((window.__chartsRendered || {{}})[id] || 0) > 0)"
        ),
        timeout=60,
        interval=0.2,
        what="every chart drawn",
    )
    expect(page.locator("#status")).to_have_text("")
    assert page.locator("#c-heat canvas").count() >= 1
    links = page.locator("[data-csv] a")
    assert links.count() == 6  # heatmap, rooms, sessions, lengths, calls, uptime
    href = links.first.get_attribute("href") or ""
    csv = services.admin("GET", href)
    assert csv.status_code == 200 and csv.content.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    assert "lang=zh" in href  # column names in the page's language
    assert "星期" in csv.content.decode("utf-8-sig").splitlines()[0]
    assert axe_violations(page) == []
    screenshot(page, "trends")
