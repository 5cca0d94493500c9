"""Web Push end to end: keys from `mamaroom webpush keys`, a subscription as a
browser makes one, and a local push endpoint that decrypts what arrives
(RFC 8291 aes128gcm) and checks the VAPID header. No browser can reach a
real push service here; the server's side is all real."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import DeviceFactory, Mosquitto, Services, free_port, wait_for


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushService:
    """A stand-in push service on 127.0.0.1: stores every message it accepts."""

    def __init__(self, status: int = 201) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((self.path, dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


class Browser:
    """The keys a browser's PushSubscription carries (p256dh, auth)."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        #: As a browser's PushSubscription.toJSON() gives it.
        self.subscription: dict[str, Any] = {
            "endpoint": endpoint,
            "keys": {"p256dh": b64(public), "auth": b64(self.auth)},
        }

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return dict(json.loads(plain))


@pytest.fixture
def push_services(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, vapid: tuple[str, str]
) -> Iterator[Services]:
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGES__VAPID_PUBLIC_KEY=vapid[0],
        MAMAROOM_PAGES__PUSH_HOSTS='["http://127.0.0.1"]',
        MAMAROOM_PAGES__VAPID_PRIVATE_KEY=vapid[1],
        MAMAROOM_PAGES__PUBLIC_URL="https://mamaroom.park.example",
        MAMAROOM_PAGES__STAFF_URL="https://mamaroom.park.example:8443/",
    ).start()
    yield svc
    svc.stop()


def test_a_mother_is_pushed_once_when_her_room_frees_up(
    push_services: Services, device_factory: DeviceFactory, vapid: tuple[str, str]
) -> None:
    svc = push_services
    assert svc.http.get("/api/push/key").json() == {"public_key": vapid[0], "enabled": True}
    node = device_factory("dev-a")
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")
    push = PushService()
    phone = Browser(push.url + "/push/mother-1")
    r = svc.http.post(
        "/api/push/reminder",
        json={"subscription": phone.subscription, "rooms": ["T1-0101"], "lang": "zh"},
    )
    assert r.status_code == 204, r.text
    # The server posts only to push services it knows, never where anyone says.
    elsewhere = Browser("https://push.example.invalid/anything").subscription
    r = svc.http.post("/api/push/reminder", json={"subscription": elsewhere, "rooms": ["T1-0101"]})
    assert r.status_code == 422 and "push service" in r.text

    node.occupancy(False)
    wait_for(lambda: push.received, what="a push", detail=svc.logs)
    path, raw_headers, body = push.received[0]
    headers = {k.lower(): v for k, v in raw_headers.items()}
    assert path == "/push/mother-1"
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["authorization"].startswith("vapid t="), headers
    assert f"k={vapid[0]}" in headers["authorization"]  # VAPID: signed by our key
    message = phone.decrypt(body)
    assert message["title"] == "母婴室有空位了"
    assert message["url"] == "https://mamaroom.park.example/r/T1-0101"
    assert "测试楼1层母婴室" in message["body"]

    # Once: the reminder is used up.
    node.occupancy(True)
    svc.wait_room_state("T1-0101", "occupied")
    node.occupancy(False)
    svc.wait_room_state("T1-0101", "free")
    svc.http.get("/api/rooms")  # one more round trip after the change
    assert len(push.received) == 1


def test_staff_phones_get_new_calls_and_gone_subscriptions_are_dropped(
    push_services: Services, device_factory: DeviceFactory
) -> None:
    svc = push_services
    token = svc.login("admin", svc.ADMIN_PASSWORD)
    gone = PushService(status=410)
    push = PushService()
    phones = [Browser(push.url + "/push/staff-1"), Browser(gone.url + "/push/old-phone")]
    for phone in phones:
        r = svc.http.post(
            "/api/push/staff",
            json={"subscription": phone.subscription},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 204, r.text
    assert (
        svc.http.post("/api/push/staff", json={"subscription": phones[0].subscription}).status_code
        == 401
    )  # staff only
    node = device_factory("dev-a")
    node.call("press", "push-1")
    wait_for(lambda: push.received and gone.received, what="pushes", detail=svc.logs)
    message = phones[0].decrypt(push.received[0][2])
    assert "紧急呼叫" in message["title"] and "T1-0101" in message["body"]
    # The console is on the staff listener, not the public surface (where it is 404).
    assert message["url"] == "https://mamaroom.park.example:8443/staff"
    # The first call is over (a press while it is open would join it).
    [first] = svc.admin("GET", "/api/alerts").json()
    svc.admin("POST", f"/api/alerts/{first['id']}/resolve").raise_for_status()
    node.call("press", "push-2")  # a second call: the gone phone is not tried again
    wait_for(lambda: len(push.received) == 2, what="second push", detail=svc.logs)
    assert len(gone.received) == 1


def test_anonymous_reminders_are_rate_limited(push_services: Services) -> None:
    """Measured on main before: 3,000 anonymous reminders at 184/s were all
    taken, 10.5 kB of server.sqlite each (a full disk in hours)."""
    svc = push_services
    codes = []
    for i in range(30):
        sub = Browser(f"http://127.0.0.1:9/push/flood-{i}").subscription
        codes.append(
            svc.http.post(
                "/api/push/reminder", json={"subscription": sub, "rooms": ["T1-0101"]}
            ).status_code
        )
    assert codes[:3] == [204, 204, 204]  # a mother's few tries pass
    assert codes.count(204) <= 4 and codes.count(429) >= 26
    r = svc.http.post(
        "/api/push/reminder",
        json={
            "subscription": Browser("http://127.0.0.1:9/push/x").subscription,
            "rooms": ["T1-0101"],
        },
    )
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"


def test_a_tier_pages_one_accounts_phones_over_web_push(
    broker: Mosquitto,
    tmp_path: Path,
    rooms_csv: Path,
    vapid: tuple[str, str],
    device_factory: DeviceFactory,
) -> None:
    """`push:<account>` in a tier: a page to that account's phones only, its
    outcome in the call's timeline, and the push of every call to every phone
    off (one push per page). A push service refusing the page is a
    `paging_link` alert for that target, cleared when a page gets through."""
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGES__VAPID_PUBLIC_KEY=vapid[0],
        MAMAROOM_PAGES__VAPID_PRIVATE_KEY=vapid[1],
        MAMAROOM_PAGES__PUSH_HOSTS='["http://127.0.0.1"]',
        MAMAROOM_PAGES__STAFF_URL="https://mamaroom.park.example:8443/",
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "targets": ["push:admin"]}]',
    ).start()
    push = PushService()
    try:
        svc.admin(
            "PUT", "/api/admin/users/nurse", json={"role": "staff", "password": "a fine password"}
        ).raise_for_status()
        mine, theirs = Browser(push.url + "/push/admin"), Browser(push.url + "/push/nurse")
        for who, password, phone in (
            ("admin", svc.ADMIN_PASSWORD, mine),
            ("nurse", "a fine password", theirs),
        ):
            r = svc.http.post(
                "/api/push/staff",
                json={"subscription": phone.subscription},
                headers={"Authorization": f"Bearer {svc.login(who, password)}"},
            )
            assert r.status_code == 204, r.text
        node = device_factory("dev-a")
        node.call("press", "tier-push-1")
        wait_for(lambda: push.received, what="the page's push", detail=svc.logs)
        [alert] = svc.admin("GET", "/api/alerts").json()
        wait_for(
            lambda: any(
                e["what"] == "paged" and e["channel"] == "push" and e["who"] == "admin"
                for e in svc.admin("GET", f"/api/alerts/{alert['id']}").json()["timeline"]
            ),
            what="'paged' over push in the timeline",
            detail=svc.logs,
        )
        path, _, body = push.received[0]
        assert path == "/push/admin"
        message = mine.decrypt(body)
        assert message["title"] == "紧急呼叫：测试楼1层母婴室（T1-0101）"
        assert message["body"] == "CALL Test Bldg 1F (T1-0101)"
        assert message["url"] == "https://mamaroom.park.example:8443/staff"

        # The push service refuses: the page failed, and the link is an alert.
        svc.admin("POST", f"/api/alerts/{alert['id']}/resolve").raise_for_status()
        push.status = 500
        node.call("press", "tier-push-2")
        [link] = wait_for(
            lambda: svc.admin("GET", "/api/alerts", params={"kind": "paging_link"}).json(),
            what="a paging_link alert",
            detail=svc.logs,
        )
        assert link["subject"] == "push:admin"
        call = next(a for a in svc.admin("GET", "/api/alerts").json() if a["kind"] == "call")
        wait_for(
            lambda: any(
                e["what"] == "page failed" and e["channel"] == "push"
                for e in svc.admin("GET", f"/api/alerts/{call['id']}").json()["timeline"]
            ),
            what="'page failed' in the timeline",
        )
        # Back: the next page gets through and the link alert clears.
        svc.admin("POST", f"/api/alerts/{call['id']}/resolve").raise_for_status()
        push.status = 201
        node.call("press", "tier-push-3")
        wait_for(
            lambda: svc.admin("GET", f"/api/alerts/{link['id']}").json()["status"] == "resolved",
            what="the paging_link alert cleared",
            detail=svc.logs,
        )
        # Only the tier's account was pushed to: three pages, none to the nurse.
        assert [p for p, _, _ in push.received] == ["/push/admin"] * 3
    finally:
        svc.stop()
