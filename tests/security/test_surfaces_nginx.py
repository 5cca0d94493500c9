"""The two surfaces through the real proxy: Debian's nginx with the shipped
deploy/nginx/mamaroom.conf in front of a real server, its public listener
as the internet sees it and its staff listener as the intranet does.

- Internet side: every public route answers; every staff route, and any
  trick path that leads to one, is 404 from nginx (never 401: the internet
  does not learn there is a login), and a staff token gets a mother's view.
  Rate and connection limits are its own. The access log has no full
  address of a phone.
- Intranet side: everything, staff routes included.

Routes come from server/surfaces.py, so a new route is tested here as soon
as it is classified (tests/test_surfaces.py makes sure every one is).
A response that reached the server carries its security headers
(server/security.py); one nginx made itself does not."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.surfaces import PUBLIC, STAFF
from tests.security.nginx import Nginx, make_certs, needs_nginx
from tests.support import Device, Mosquitto, Services, sse_events, wait_for
from tests.test_surfaces import samples
from tests.test_webpush import Browser

pytestmark = needs_nginx
#: Streams one phone's address may hold on the public listener (limit_conn).
PER_ADDRESS = 100


@pytest.fixture
def services(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, vapid: tuple[str, str]
) -> Iterator[Services]:
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_SERVER__TRUSTED_PROXIES='["127.0.0.1"]',
        MAMAROOM_PAGES__VAPID_PUBLIC_KEY=vapid[0],
        MAMAROOM_PAGES__VAPID_PRIVATE_KEY=vapid[1],
        MAMAROOM_PAGES__PUSH_HOSTS='["http://127.0.0.1"]',
    ).start()
    yield svc
    svc.stop()


@pytest.fixture
def proxy(services: Services, tmp_path: Path) -> Iterator[tuple[Nginx, ssl.SSLContext]]:
    certs = make_certs(tmp_path / "certs")
    nginx = Nginx(tmp_path / "nginx-run", services.http_port, certs).start()
    trust = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with httpx.Client(base_url=nginx.staff_url, verify=trust, timeout=10) as staff:
        wait_for(
            lambda: staff.get("/healthz").status_code == 200,
            timeout=30,
            what="the server through nginx",
        )
    yield nginx, trust
    nginx.stop()


def reached(r: httpx.Response) -> bool:
    """The server answered (nginx's own pages lack the server's headers)."""
    nosniff: str | None = r.headers.get("x-content-type-options")
    return nosniff == "nosniff"


def body_for(method: str, path: str) -> dict[str, Any]:
    if method in ("POST", "PUT", "PATCH"):
        return {"json": {}}
    return {}


def test_the_internet_side_serves_only_public_paths(
    services: Services, proxy: tuple[Nginx, ssl.SSLContext]
) -> None:
    nginx, trust = proxy
    token = services.login("admin", services.ADMIN_PASSWORD)
    admin = {"Authorization": f"Bearer {token}"}
    failures = []
    with httpx.Client(base_url=nginx.public_url, verify=trust, timeout=10) as web:
        for method, path in sorted(PUBLIC):
            if path == "/api/stream":
                continue  # endless; below
            for m, p in samples(method, path):
                r = web.request(m, p, **body_for(m, p))
                # 422: a reminder without its body; the route is there. WeChat
                # is off here: its routes answer themselves (404, 401, 303).
                ok = (200, 204, 422) if "wechat" not in p else (200, 204, 303, 401, 404, 422, 429)
                if not reached(r) or r.status_code not in ok:
                    failures.append(f"public {m} {p}: {r.status_code} reached={reached(r)}")
        for method, path in sorted(STAFF):
            for m, p in samples(method, path):
                for headers in ({}, admin):
                    r = web.request(m, p, headers=headers, **body_for(m, p))
                    if r.status_code != 404 or reached(r):
                        failures.append(
                            f"staff {m} {p} on the internet side: "
                            f"{r.status_code} reached={reached(r)}"
                        )
        # Paths that are staff routes once decoded or normalised.
        for p in (
            "/static/../api/alerts",
            "/r/%2e%2e/api/alerts",
            "/%61pi/alerts",
            "/api/rooms/..%2f..%2fapi%2falerts",
            "//api/alerts",
            "/api/stream/../alerts",
            "/r/T1-0101/../../staff",
            "/api/rooms/T1-0101%2f..%2f..%2falerts",
            "/STAFF",
            "/api/Alerts",
            "/static/staff.js",
            "/vendor/echarts.min.js",
        ):
            r = web.get(p, headers=admin)
            if r.status_code not in (400, 404):
                failures.append(f"trick {p}: {r.status_code}")
        # A write the server does not know is not passed on either.
        r = web.request("DELETE", "/api/rooms/T1-0101", headers=admin)
        assert r.status_code == 404 and not reached(r)
        page = web.get("/", headers=admin)
        assert page.status_code == 200 and page.headers["x-mamaroom-surface"] == "public"
        assert "set-cookie" not in page.headers
    assert failures == []


def test_the_intranet_side_serves_everything(
    services: Services, proxy: tuple[Nginx, ssl.SSLContext]
) -> None:
    nginx, trust = proxy
    failures = []
    with httpx.Client(base_url=nginx.staff_url, verify=trust, timeout=10) as web:
        # Every route reaches the server; anonymous, so nothing is changed.
        for method, path in sorted(PUBLIC | STAFF):
            if path == "/api/stream":
                continue
            for m, p in samples(method, path):
                r = web.request(m, p, **body_for(m, p))
                if not reached(r) or r.status_code >= 500:
                    failures.append(f"{m} {p} on the intranet side: {r.status_code}")
                if "x-mamaroom-surface" in r.headers:
                    failures.append(f"{m} {p}: marked public on the intranet side")
        # A client cannot make the intranet side public (nor the reverse).
        r = web.get("/staff", headers={"X-Mamaroom-Surface": "public"})
        assert r.status_code == 200, r.status_code
        # The staff's work, logged in with a session cookie as the console does.
        r = web.post(
            "/api/auth/session", data={"username": "admin", "password": services.ADMIN_PASSWORD}
        )
        assert r.status_code == 200, r.text
        for path in (
            "/staff",
            "/admin",
            "/trends",
            "/api/alerts",
            "/api/devices",
            "/api/admin/users",
            "/api/auth/me",
            "/metrics",
            "/readyz",
            "/static/staff.js",
            "/vendor/echarts.min.js",
        ):
            r = web.get(path)
            if r.status_code != 200:
                failures.append(f"staff {path}: {r.status_code}")
    assert failures == []


def test_a_staff_token_from_the_internet_gets_no_alerts(
    services: Services, proxy: tuple[Nginx, ssl.SSLContext], broker: Mosquitto
) -> None:
    nginx, trust = proxy
    token = services.login("admin", services.ADMIN_PASSWORD)
    admin = {"Authorization": f"Bearer {token}"}
    caller, other = Device(broker.port, "dev-a"), Device(broker.port, "dev-b")
    try:
        caller.call("press", "internet-1")
        wait_for(lambda: services.admin("GET", "/api/alerts").json(), what="the call stored")
        staff = sse_events(f"{nginx.staff_url}/api/stream", headers=admin, verify=trust)
        assert [next(staff)[0], next(staff)[0]] == ["snapshot", "alert"]
        staff.close()
        public = sse_events(f"{nginx.public_url}/api/stream", headers=admin, verify=trust)
        assert next(public)[0] == "snapshot"
        other.occupancy(True)  # a later event: what came before it was the backlog
        seen = []
        for event, _ in public:
            seen.append(event)
            if event == "room":
                break
        public.close()
        assert seen[-1] == "room" and "alert" not in seen, seen
    finally:
        caller.close()
        other.close()


def test_the_internet_side_has_its_own_limits(
    services: Services, proxy: tuple[Nginx, ssl.SSLContext]
) -> None:
    nginx, trust = proxy

    def writes(base: str) -> list[httpx.Response]:
        with httpx.Client(base_url=base, verify=trust, timeout=10) as web:
            return [
                web.post("/api/push/unsubscribe", json={"endpoint": f"http://127.0.0.1:9/push/{i}"})
                for i in range(40)
            ]

    # Reminders: the server's own limit answers first (JSON), nginx's after its burst.
    public = writes(nginx.public_url)
    assert any(r.status_code == 429 and not reached(r) for r in public), [
        (r.status_code, reached(r)) for r in public
    ]
    intranet = writes(nginx.staff_url)
    assert all(reached(r) for r in intranet)  # no limit of nginx's on the staff side

    # Open connections per phone's address: the stream after PER_ADDRESS is refused.
    with contextlib.ExitStack() as stack:
        web = stack.enter_context(
            httpx.Client(
                base_url=nginx.public_url,
                verify=trust,
                timeout=30,
                limits=httpx.Limits(max_connections=PER_ADDRESS + 10),
            )
        )
        lines = []  # each stream's reader, kept: a dropped one closes its connection
        for i in range(PER_ADDRESS):
            r = stack.enter_context(web.stream("GET", "/api/stream"))
            assert r.status_code == 200, (i, r.status_code)
            lines.append(r.iter_lines())
            next(lines[-1])  # being served: counted
        with web.stream("GET", "/api/stream") as extra:
            assert extra.status_code == 429 and not reached(extra)
        staff = stack.enter_context(
            httpx.Client(base_url=nginx.staff_url, verify=trust, timeout=30)
        )
        with staff.stream("GET", "/api/stream") as intranet_stream:
            assert intranet_stream.status_code == 200  # the staff side is not counted


def test_the_public_log_keeps_no_full_address(
    services: Services, proxy: tuple[Nginx, ssl.SSLContext]
) -> None:
    nginx, trust = proxy
    with httpx.Client(base_url=nginx.public_url, verify=trust, timeout=10) as web:
        assert web.get("/api/rooms?building=secret-building").status_code == 200
        assert web.get("/api/alerts").status_code == 404
        r = web.post(
            "/api/push/reminder",
            json={
                "subscription": Browser("http://127.0.0.1:9/push/logged").subscription,
                "rooms": ["T1-0101"],
            },
        )
        assert r.status_code == 204, r.text
    log = wait_for(
        lambda: t if (t := nginx.public_log()).count("\n") >= 3 else None,
        what="the public access log",
    )
    assert "127.0.0.0 " in log and "127.0.0.1" not in log, log
    assert "secret-building" not in log and "/push/logged" not in log
