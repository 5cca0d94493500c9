"""The admin page in real Chromium: room flags, CSV import, adopting and moving
devices, accounts and the duty roster, each checked through the API after."""

from __future__ import annotations

from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import axe_violations, screenshot
from tests.browser.test_languages import foreign
from tests.browser.test_staff import login
from tests.support import DeviceFactory, Services, wait_for

LIVE_TIMEOUT = 30_000
CSV = (
    "room_id,name,name_en,building,building_en,floor,device\n"
    "T1-0101,测试楼1层母婴室,Test Bldg 1F,测试楼,Test Bldg,1,dev-a\n"
    "T1-0201,测试楼2层母婴室,Test Bldg 2F,测试楼,Test Bldg,2,dev-b\n"
    "T1-0301,测试楼3层母婴室,Test Bldg 3F,测试楼,Test Bldg,3,\n"
    "T1-0401,测试楼4层母婴室,Test Bldg 4F,测试楼,Test Bldg,4,\n"
)


def room(services: Services, room_id: str) -> dict[str, object]:
    """The room in the registry; {} while it is not there (yet)."""
    rooms = services.admin("GET", "/api/admin/registry").json()["rooms"]
    return next((r for r in rooms if r["id"] == room_id), {})


def test_admin_page(services: Services, device_factory: DeviceFactory, page: Page) -> None:
    page.goto(services.base_url + "/admin")
    login(page, services)

    # Being cleaned: one tap; the public room is no longer offered.
    page.get_by_label("清洁中 T1-0101").check()
    wait_for(lambda: room(services, "T1-0101").get("cleaning"), what="cleaning saved")
    public = services.room("T1-0101")
    assert public["cleaning"] is True and public["available"] is False
    assert axe_violations(page) == []
    screenshot(page, "admin")

    # Import a rooms CSV: checked first, then applied.
    page.set_input_files(
        "#csv-file",
        files=[
            FilePayload(name="rooms.csv", mimeType="text/csv", buffer=("\ufeff" + CSV).encode())
        ],
    )
    expect(page.locator("#panel-rooms")).to_contain_text("文件有效：4 间", timeout=LIVE_TIMEOUT)
    page.click("#csv-apply")
    wait_for(lambda: room(services, "T1-0401"), what="imported room")
    expect(page.locator("#admin-rooms [data-room='T1-0401']")).to_be_visible()  # re-drawn
    assert room(services, "T1-0101")["cleaning"] is True  # kept across the import
    page.set_input_files(
        "#csv-file",
        files=[FilePayload(name="bad.csv", mimeType="text/csv", buffer=b"room_id,name\nX,y\n")],
    )
    expect(page.locator("#panel-rooms")).to_contain_text("缺少列", timeout=LIVE_TIMEOUT)
    # A row the server refuses: said in the page's language (mamaroom/said.py).
    page.set_input_files(
        "#csv-file",
        files=[
            FilePayload(
                name="bad.csv",
                mimeType="text/csv",
                buffer=(CSV.splitlines()[0] + "\nT1-0501,五楼,5F,一号楼,Bldg 1,五楼,\n").encode(),
            )
        ],
    )
    problem = page.locator("#panel-rooms .error + ul li").first
    expect(problem).to_contain_text("第 2 行：楼层：必须是整数", timeout=LIVE_TIMEOUT)
    assert foreign("zh", [problem.inner_text()]) == []

    # Adopt a device seen on the broker, then move another one.
    stranger = device_factory("dev-new")
    stranger.occupancy(False)
    wait_for(lambda: services.admin("GET", "/api/devices").json()["unknown"], what="unknown")
    page.click("#tab-devices")
    form = page.locator("form[data-device='dev-new']")
    form.locator("select").select_option("T1-0301")
    form.locator("button").click()
    wait_for(lambda: room(services, "T1-0301").get("device") == "dev-new", what="adopted")
    # The page redraws its device lists after the adoption; choose only after that,
    # or the choice lands in a form about to be replaced (seen on a loaded machine).
    expect(page.locator("form[data-device='dev-new']")).to_have_count(0, timeout=LIVE_TIMEOUT)
    page.select_option("select[name=device]", "dev-a")
    page.locator("form:has(select[name=device]) select[name=room]").select_option("T1-0401")
    page.locator("form:has(select[name=device]) button[type=submit]").click()
    wait_for(lambda: room(services, "T1-0401").get("device") == "dev-a", what="moved")
    assert room(services, "T1-0101")["device"] is None

    # An account.
    page.click("#tab-users")
    page.get_by_label("用户名").fill("nurse-wang")
    page.get_by_label("角色").select_option("staff")
    page.get_by_label("密码（至少 10 位）").fill("a long password")
    page.get_by_role("button", name="创建或修改").click()
    expect(page.locator("#panel-users table")).to_contain_text("nurse-wang", timeout=LIVE_TIMEOUT)
    assert services.login("nurse-wang", "a long password")

    # The duty roster: saved here, it wins over the config file.
    page.click("#tab-roster")
    page.get_by_role("button", name="添加一行").click()
    shift = page.locator("fieldset.shift").last
    shift.get_by_label("姓名").fill("王丽")
    shift.get_by_label("寻呼号").fill("101")
    shift.get_by_label("负责楼宇（用；分隔，空为全部）").fill("测试楼")
    page.get_by_role("button", name="保存值班表").click()
    wait_for(
        lambda: services.admin("GET", "/api/admin/roster").json()["source"] == "admin",
        what="roster saved",
    )
    roster = services.admin("GET", "/api/admin/roster").json()["shifts"]
    assert roster == [{"name": "王丽", "pager": "101", "buildings": ["测试楼"], "hours": ""}]
    assert axe_violations(page) == []
