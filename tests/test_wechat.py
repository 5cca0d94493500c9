"""WeChat end to end, against the stand-in (tests/wechat_standin.py): the real
server process, a real node publishing occupancy, and a mother's phone
following the redirects as WeChat's in-app browser would. Then the API
client alone against the stand-in, for what is awkward to stage through
processes: "system busy", the force refresh, the quotas."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from mamaroom.config import WechatSettings
from server.services.rooms import PublicRoom
from server.services.wechat import Outgoing, WechatApi, WechatDb, WechatError, WechatService
from tests.support import DeviceFactory, Mosquitto, Services, wait_for
from tests.wechat_standin import APP_ID, EVENT_TOKEN, SECRET, TEMPLATE_ID, WechatStandin

WECHAT_UA = (
    "Mozilla/5.0 (Linux; Android 13; V2244A) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 MMWEBSDK/20231202 "
    "MMWEBID/2247 MicroMessenger/8.0.47.2560(0x28002F30) WeChat/arm64 Weixin "
    "NetType/WIFI Language/zh_CN ABI/arm64"
)
MENU_LINK = "/?building=%E6%B5%8B%E8%AF%95%E6%A5%BC&floor=1"  # ?building=测试楼&floor=1


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


class Phone:
    """A mother's phone in WeChat: its own cookies, following redirects
    between the server and "WeChat" (the stand-in) one at a time."""

    def __init__(self, svc: Services, standin: WechatStandin, openid: str) -> None:
        self.svc, self.standin, self.openid = svc, standin, openid
        self.http = httpx.Client(headers={"User-Agent": WECHAT_UA}, timeout=10)

    def close(self) -> None:
        self.http.close()

    def open_menu_link(self) -> str:
        page = self.http.get(self.svc.base_url + MENU_LINK)
        assert page.status_code == 200 and "mothers.js" in page.text
        return page.text

    def sign_in(self, next_path: str = MENU_LINK) -> httpx.Response:
        """The tap on "tell me in WeChat": the silent OAuth round trip."""
        self.standin.user = self.openid  # whoever holds the phone
        start = self.http.get(f"{self.svc.base_url}/wechat/oauth/start", params={"next": next_path})
        assert start.status_code == 302, start.text
        authorize = start.headers["location"]
        assert authorize.startswith(f"{self.standin.url}/connect/oauth2/authorize?")
        assert authorize.endswith("#wechat_redirect")
        q = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
        assert q["appid"] == APP_ID and q["scope"] == "snsapi_base"
        assert q["response_type"] == "code"
        assert q["redirect_uri"] == f"{self.svc.base_url}/wechat/oauth/callback"
        assert re.fullmatch(r"[A-Za-z0-9]{1,128}", q["state"])
        wechat = self.http.get(authorize.split("#")[0])  # WeChat: straight back, silently
        assert wechat.status_code == 302, wechat.text
        back = wechat.headers["location"]
        assert back.startswith(q["redirect_uri"] + "?")
        return self.http.get(back)

    def csrf(self) -> dict[str, str]:
        return {"X-Wechat-CSRF": self.http.cookies.get("mamaroom_wx_csrf") or ""}

    def remind(self, rooms: list[str], lang: str = "zh") -> httpx.Response:
        return self.http.post(
            f"{self.svc.base_url}/api/wechat/reminder",
            json={"rooms": rooms, "lang": lang},
            headers=self.csrf(),
        )

    def config(self) -> dict[str, Any]:
        return dict(self.http.get(f"{self.svc.base_url}/api/wechat/config").json())


def test_menu_link_oauth_subscribe_room_frees_message_once_token_expiry_and_refusal(
    wechat_services: Services, standin: WechatStandin, device_factory: DeviceFactory
) -> None:
    # Three reminders in all: the anonymous writes' budget of one address at once.
    svc = wechat_services
    node = device_factory("dev-a")
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")

    # The menu link opens the mothers' page; inside WeChat it offers WeChat.
    mother = Phone(svc, standin, "o-mother-ann")
    mother.open_menu_link()
    assert mother.config() == {
        "enabled": True,
        "ready": False,
        "waiting": False,
        "app_id": APP_ID,
        "template_id": TEMPLATE_ID,
        "jssdk_url": f"{standin.url}/open/js/jweixin-1.6.0.js",
    }

    # OAuth (snsapi_base): back on the page she came from, known to the server.
    back = mother.sign_in()
    assert back.status_code == 303, back.text
    assert back.headers["location"] == MENU_LINK + "#wx-ready"
    assert mother.config()["ready"] is True
    # Her openid never reaches the page: the cookie is a random session id.
    assert "o-mother-ann" not in str(dict(mother.http.cookies))
    assert "o-mother-ann" not in mother.http.get(f"{svc.base_url}/api/wechat/config").text

    # She agrees in WeChat's subscribe button; the page registers the rooms.
    standin.accept("o-mother-ann")
    assert mother.remind(["T1-0101"]).status_code == 204
    assert mother.config()["waiting"] is True

    # The room frees: one subscription message, to her, opening the room's page.
    node.occupancy(False)
    [message] = wait_for(
        lambda: standin.sent_to("o-mother-ann"), what="the WeChat message", detail=svc.logs
    )
    assert message["template_id"] == TEMPLATE_ID
    assert message["page"] == f"{svc.base_url}/r/T1-0101"
    assert message["data"]["thing1"] == {"value": "测试楼1层母婴室"}
    assert message["data"]["phrase2"] == {"value": "空闲"}
    assert re.fullmatch(r"\d\d:\d\d", message["data"]["time3"]["value"])
    assert mother.config()["waiting"] is False
    # Once: the reminder is used up and her openid forgotten with it.
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")
    node.occupancy(False)
    svc.wait_room_state("T1-0101", "free")
    wait_for(lambda: "wechat room-free message sent" in svc.server.log(), what="log line")
    assert standin.attempts["o-mother-ann"] == 1

    # The platform ends the access token: the next send is refused (42001),
    # the server fetches a new token and sends again, once.
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")
    standin.accept("o-mother-ann")
    assert mother.remind(["T1-0101"], lang="en").status_code == 204
    issued = standin.tokens_issued
    standin.expire_token()
    node.occupancy(False)
    wait_for(
        lambda: len(standin.sent_to("o-mother-ann")) == 2,
        what="the message after the token expired",
        detail=svc.logs,
    )
    codes = standin.codes_of("/cgi-bin/message/subscribe/bizsend")
    assert codes[-2:] == [42001, 0], codes
    assert standin.tokens_issued == issued + 1
    assert standin.sent_to("o-mother-ann")[1]["data"]["thing1"] == {
        "value": "Test Bldg 1F"
    }  # her page was in English
    assert "wechat access token refused; renewing it" in svc.server.log()

    # A second mother who never agreed in the popup (or cancelled): 43101,
    # logged, forgotten, never tried again: no retry storm.
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")
    other = Phone(svc, standin, "o-mother-bea")
    assert other.sign_in().status_code == 303
    assert other.remind(["T1-0101"]).status_code == 204
    node.occupancy(False)
    wait_for(
        lambda: "wechat message refused" in svc.server.log(),
        what="the refusal logged",
        detail=svc.logs,
    )
    assert standin.attempts["o-mother-bea"] == 1
    assert other.config()["waiting"] is False
    for _ in range(2):
        node.occupancy(True)
        svc.wait_room_state("T1-0101", "occupied")
        node.occupancy(False)
        svc.wait_room_state("T1-0101", "free")
    svc.http.get("/api/rooms")  # one more round trip after the last change
    assert standin.attempts["o-mother-bea"] == 1
    assert standin.sent_to("o-mother-bea") == []
    # Personal data stays out of the log: no openid in it.
    assert "o-mother-" not in svc.server.log()
    mother.close()
    other.close()


def test_wechat_pushes_a_mothers_cancel_and_her_reminder_goes(
    wechat_services: Services, standin: WechatStandin
) -> None:
    """WeChat's event push (订阅通知事件推送) to the account's server URL:
    checked by signature; a "cancel" in the popup, or notifications refused
    later, deletes her reminder at once. Measured before: it stayed until a
    send met 43101 or it lapsed after 2 h."""
    svc = wechat_services
    url = svc.base_url
    # The server URL check WeChat makes when the account is set up.
    timestamp, nonce = "1700000000", "n0nce"
    signature = hashlib.sha1("".join(sorted((EVENT_TOKEN, timestamp, nonce))).encode()).hexdigest()
    check = {"signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": "e42"}
    assert httpx.get(f"{url}/wechat/events", params=check).text == "e42"
    forged = httpx.get(f"{url}/wechat/events", params={**check, "signature": "0" * 40})
    assert forged.status_code == 403

    ann, bea = Phone(svc, standin, "o-ann"), Phone(svc, standin, "o-bea")
    try:
        for phone in (ann, bea):
            phone.sign_in()
            standin.accept(phone.openid)
            assert phone.remind(["T1-0101"]).status_code == 204
        # Not signed with the token: refused, and nothing changes.
        assert (
            standin.push(url, "o-ann", "subscribe_msg_popup_event", "reject", token="x").status_code
            == 403
        )
        assert ann.config()["waiting"] is True
        # Another template's choice, an accept, a delivery report: hers stays.
        for args in (
            ("subscribe_msg_popup_event", "reject", "Tpl-other"),
            ("subscribe_msg_popup_event", "accept", TEMPLATE_ID),
            ("subscribe_msg_sent_event", "success", TEMPLATE_ID),
        ):
            pushed = standin.push(url, "o-ann", args[0], args[1], template=args[2])
            assert (pushed.status_code, pushed.text) == (200, "success")
        assert ann.config()["waiting"] is True
        # She tapped "cancel" in the popup; Bea later refused them in WeChat's settings.
        assert standin.push(url, "o-ann", "subscribe_msg_popup_event", "reject").text == "success"
        assert standin.push(url, "o-bea", "subscribe_msg_change_event", "reject").text == "success"
        assert ann.config()["waiting"] is False and bea.config()["waiting"] is False
        # Not the documented XML: 400, and the server goes on.
        bad = httpx.post(
            f"{url}/wechat/events",
            params={k: check[k] for k in ("signature", "timestamp", "nonce")},
            content=b"<xml><unclosed>",
        )
        assert bad.status_code == 400
        assert svc.http.get("/readyz").status_code == 200
    finally:
        ann.close()
        bea.close()


def test_oauth_state_is_checked_and_next_stays_on_this_site(
    wechat_services: Services, standin: WechatStandin
) -> None:
    svc = wechat_services
    phone = Phone(svc, standin, "o-mother-cat")
    # No session: no reminder. (All phones here share 127.0.0.1, and with it
    # the anonymous writes' budget: 3 at once. These are two of them.)
    assert phone.remind(["T1-0101"]).status_code == 401
    phone.sign_in()
    assert (
        phone.http.post(
            f"{svc.base_url}/api/wechat/reminder", json={"rooms": ["T1-0101"]}
        ).status_code
        == 403
    )  # no CSRF token
    phone.http.cookies.clear()
    # A callback this browser never started (a forged link): refused, no session.
    forged = phone.http.get(
        f"{svc.base_url}/wechat/oauth/callback", params={"code": "abc", "state": "0" * 32}
    )
    assert forged.status_code == 400
    assert "mamaroom_wx" not in phone.http.cookies
    # A round trip started by another browser: its state is not this one's.
    attacker = httpx.Client(timeout=10)
    start = attacker.get(f"{svc.base_url}/wechat/oauth/start")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    phone.http.get(f"{svc.base_url}/wechat/oauth/start")  # her own, other state
    r = phone.http.get(
        f"{svc.base_url}/wechat/oauth/callback", params={"code": "abc", "state": state}
    )
    assert r.status_code == 400 and "mamaroom_wx" not in phone.http.cookies
    attacker.close()
    # `next` elsewhere is refused: back to this site's front page.
    back = phone.sign_in("https://evil.example/phish")
    assert back.headers["location"] == "/#wx-ready"
    back = phone.sign_in("//evil.example/phish")
    assert back.headers["location"] == "/#wx-ready"
    # A used code (WeChat: 40029) brings her back with a note, no session change.
    phone.http.cookies.clear()
    start = phone.http.get(f"{svc.base_url}/wechat/oauth/start", params={"next": "/r/T1-0101"})
    wechat = phone.http.get(start.headers["location"].split("#")[0])
    callback = wechat.headers["location"]
    assert phone.http.get(callback).headers["location"] == "/r/T1-0101#wx-ready"
    phone.http.get(f"{svc.base_url}/wechat/oauth/start", params={"next": "/r/T1-0101"})
    oauth = phone.http.cookies.get("mamaroom_wx_oauth", path="/wechat/oauth")
    assert oauth is not None
    state = oauth.split(".")[0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    again = phone.http.get(
        f"{svc.base_url}/wechat/oauth/callback", params={"code": code, "state": state}
    )
    assert again.headers["location"] == "/r/T1-0101#wx-failed"
    # The JS-SDK signature, only for this site's pages, checked by "WeChat".
    cfg = phone.http.get(
        f"{svc.base_url}/api/wechat/jssdk", params={"url": f"{svc.base_url}/r/T1-0101"}
    ).json()
    assert standin.signature_ok(
        {
            "appId": cfg["app_id"],
            "nonceStr": cfg["nonce_str"],
            "timestamp": cfg["timestamp"],
            "signature": cfg["signature"],
        },
        f"{svc.base_url}/r/T1-0101",
    )
    assert (
        phone.http.get(
            f"{svc.base_url}/api/wechat/jssdk", params={"url": "https://evil.example/"}
        ).status_code
        == 422
    )
    # The page may load WeChat's JS-SDK (here the stand-in's): in the CSP.
    csp = phone.http.get(svc.base_url + "/").headers["content-security-policy"]
    assert f"script-src 'self' {standin.url}" in csp
    phone.close()


def test_wechat_off_by_default(services: Services) -> None:
    assert services.http.get("/api/wechat/config").json()["enabled"] is False
    assert services.http.get("/wechat/oauth/start").status_code == 404
    assert (
        services.http.post("/api/wechat/reminder", json={"rooms": ["T1-0101"]}).status_code == 404
    )
    csp = services.http.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in csp


# --- the API client alone ----------------------------------------------------


def _settings(standin: WechatStandin, **more: Any) -> WechatSettings:
    return WechatSettings(
        app_id=APP_ID,
        secret=SECRET,
        template_id=TEMPLATE_ID,
        api_base_url=standin.url,
        oauth_base_url=standin.url,
        **more,
    )


def _room() -> PublicRoom:
    return PublicRoom(
        id="T1-0101",
        name="测试楼1层母婴室",
        name_en="Test Bldg 1F",
        building="测试楼",
        building_en="Test Bldg",
        floor=1,
        device="dev-a",
        state="free",
        since=None,
        access="public",
        company="",
        hours="",
        amenities=[],
        in_service=True,
        open_now=True,
        available=True,
    )


def _known(standin: WechatStandin, openid: str, accepts: int = 1) -> None:
    standin.known_users.add(openid)
    for _ in range(accepts):
        standin.accept(openid)


def test_token_cached_busy_retried_and_force_refresh(standin: WechatStandin) -> None:
    async def run() -> None:
        api = WechatApi(_settings(standin, tries=3))
        _known(standin, "o-1", accepts=3)
        await api.send_subscribe("o-1", {"thing1": "x"}, "http://p/r/1")
        await api.send_subscribe("o-1", {"thing1": "x"}, "http://p/r/1")
        assert standin.tokens_issued == 1 and api.tokens_fetched == 1  # cached
        # "System busy" twice: tried again, the third try gets through.
        standin.busy = 2
        await api.send_subscribe("o-1", {"thing1": "x"}, "http://p/r/1")
        assert standin.codes_of("/cgi-bin/message/subscribe/bizsend")[-3:] == [-1, -1, 0]
        # WeChat refuses the token but stable_token (normal mode) keeps handing
        # it out: the force-refresh mode gets a new one, once.
        with standin.lock:
            standin.expired.add(standin.token or "")
        standin.accept("o-1")
        await api.send_subscribe("o-1", {"thing1": "x"}, "http://p/r/1")
        assert standin.force_refreshes == 1
        # A wrong secret: the token cannot be had, said plainly, not retried.
        bad = WechatApi(
            WechatSettings(
                app_id=APP_ID,
                secret="wrong-secret-123",
                template_id=TEMPLATE_ID,
                api_base_url=standin.url,
            )
        )
        with pytest.raises(WechatError) as err:
            await bad.send_subscribe("o-1", {"thing1": "x"}, "http://p/r/1")
        assert err.value.errcode == 40125
        await api.close()
        await bad.close()

    asyncio.run(run())


def test_quotas_and_unreachable(standin: WechatStandin, tmp_path: Path) -> None:
    async def run() -> None:
        db = WechatDb(tmp_path / "server.sqlite")
        await db.open()
        settings = _settings(standin, quota_retry_s=0.2, tries=2)
        service = WechatService(settings, db, "https://park.example", ZoneInfo("Asia/Shanghai"))
        assert service.api is not None
        sender = asyncio.create_task(service._sender())
        _known(standin, "o-2", accepts=2)
        # Minute quota (45011): tried once more later, then sent.
        standin.minute_limited = 1
        await service._outbox.put(Outgoing("o-2", _room(), "zh"))
        await asyncio.wait_for(_until(lambda: service.sent == 1), 30)
        assert standin.attempts["o-2"] == 2
        # Daily quota (45009): dropped, not retried.
        standin.daily_quota_left = 0
        await service._outbox.put(Outgoing("o-2", _room(), "zh"))
        await asyncio.wait_for(_until(lambda: service.failed == 1), 30)
        await asyncio.sleep(0.5)  # a retry would come after quota_retry_s (0.2 s)
        assert standin.attempts["o-2"] == 3
        # WeChat unreachable: `tries` tries, then dropped; nothing raised.
        dead = WechatService(
            _settings(standin, tries=2).model_copy(update={"api_base_url": "http://127.0.0.1:9"}),
            db,
            "https://park.example",
            ZoneInfo("Asia/Shanghai"),
        )
        await dead.send(Outgoing("o-2", _room(), "zh"))
        assert dead.failed == 1
        sender.cancel()
        await service.close()
        await dead.close()
        await db.close()

    asyncio.run(run())


async def _until(check: Any) -> None:
    """Poll `check` (the caller bounds the wait with asyncio.wait_for)."""
    for _ in range(10**6):
        if check():
            return
        await asyncio.sleep(0.02)


def test_reminders_lapse_and_are_taken_once(tmp_path: Path) -> None:
    async def run() -> None:
        db = WechatDb(tmp_path / "server.sqlite")
        await db.open()
        await db.save_reminder("o-a", ["R1", "R2"], "zh")
        await db.save_reminder("o-b", ["R2"], "en", ttl_s=-1)  # already lapsed
        assert await db.count_reminders() == 1
        assert await db.take_for_room("R2") == [("o-a", "zh")]
        assert await db.take_for_room("R1") == []  # once
        sid = await db.new_session("o-a")
        assert await db.openid_for(sid) == "o-a" and await db.openid_for("forged") is None
        assert await db.purge() == (1, 0)
        await db.close()

    asyncio.run(run())
