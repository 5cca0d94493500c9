"""Issue 14's page fixes, held by real Chromium: the mothers' "nearest free"
list goes by walking time (it went by room id), and the staff console links
only the pages an account may open (a staff account saw links that answer 403).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support import ROOT, DeviceFactory, Services

LIVE_TIMEOUT = 30_000
HEADER = "room_id,name,name_en,building,building_en,floor,device\n"
#: Ids sort 1F, 2F, 3F; from 3F of 软件园1号楼 the walk is the other way round,
#: and there are two free rooms on that floor. 软件园2号楼 is 120 m away.
ROOMS = [
    ("SP1-0101", "软件园1号楼1层母婴室", "Bldg 1, 1F", "软件园1号楼", "Software Park Bldg 1", 1),
    ("SP1-0201", "软件园1号楼2层母婴室", "Bldg 1, 2F", "软件园1号楼", "Software Park Bldg 1", 2),
    (
        "SP1-0301",
        "软件园1号楼3层母婴室（东侧）",
        "Bldg 1, 3F (east)",
        "软件园1号楼",
        "Software Park Bldg 1",
        3,
    ),
    (
        "SP1-0302",
        "软件园1号楼3层母婴室（西侧）",
        "Bldg 1, 3F (west)",
        "软件园1号楼",
        "Software Park Bldg 1",
        3,
    ),
    ("SP2-0301", "软件园2号楼3层母婴室", "Bldg 2, 3F", "软件园2号楼", "Software Park Bldg 2", 3),
]


@pytest.fixture
def rooms_csv(tmp_path: Path) -> Path:
    path = tmp_path / "rooms.csv"
    path.write_text(
        HEADER
        + "".join(
            f'{rid},{name},"{en}",{b},{b_en},{floor},n-{rid.lower()}\n'
            for rid, name, en, b, b_en, floor in ROOMS
        ),
        encoding="utf-8",
    )
    return path


def test_nearest_free_rooms_by_walking_time(
    services: Services, device_factory: DeviceFactory, page: Page
) -> None:
    for rid, *_ in ROOMS:
        device_factory(f"n-{rid.lower()}").occupancy(False)
    for rid, *_ in ROOMS:
        services.wait_room_state(rid, "free")
    page.goto(services.base_url + "/")
    page.select_option("#my-building", "软件园1号楼")
    page.select_option("#my-floor", "3")
    nearest = page.locator("#nearest-list [data-room]")
    expect(nearest).to_have_count(3, timeout=LIVE_TIMEOUT)
    # Same floor first (both of its rooms), then one floor down; never by id.
    assert [nearest.nth(i).get_attribute("data-room") for i in range(3)] == [
        "SP1-0301",
        "SP1-0302",
        "SP1-0201",
    ]
    expect(nearest.nth(0)).to_contain_text("就在附近")
    # From the other building's 3rd floor its own room comes first, then the walk over.
    page.select_option("#my-building", "软件园2号楼")
    page.select_option("#my-floor", "3")
    expect(nearest.first).to_have_attribute("data-room", "SP2-0301", timeout=LIVE_TIMEOUT)
    assert nearest.nth(1).get_attribute("data-room") in ("SP1-0301", "SP1-0302")


PASSWORD = "a-long-test-passphrase"


@pytest.mark.parametrize(
    "role, trends, admin",
    [("staff", False, False), ("manager", True, False), ("admin", True, True)],
)
def test_the_console_links_only_pages_the_account_may_open(
    services: Services, page: Page, role: str, trends: bool, admin: bool
) -> None:
    name = f"user-{role}"
    subprocess.run(
        [sys.executable, "-m", "cli", "user", "add", name, "--role", role, "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        env=services.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    page.goto(services.base_url + "/staff")
    page.fill("#login-user", name)
    page.fill("#login-pass", PASSWORD)
    page.click("#login button[type=submit]")
    expect(page.locator("#app")).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(page.locator("#who")).to_contain_text(name)
    for link, shown in (("#trends-link", trends), ("#admin-link", admin)):
        if shown:
            expect(page.locator(link)).to_be_visible()
        else:
            expect(page.locator(link)).to_be_hidden()
    # Each link shown opens (the page itself checks the role again).
    token = services.login(name, PASSWORD)
    for path, shown in (("/api/trends/heatmap", trends), ("/api/admin/registry", admin)):
        r = services.http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == (200 if shown else 403), (path, r.status_code)
