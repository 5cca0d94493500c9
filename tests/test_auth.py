"""Accounts, roles, login rate limiting and security headers, on a real server."""

from __future__ import annotations

import subprocess
import sys

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from server.security import SECURITY_HEADERS, SecurityHeaders
from tests.support import ROOT, DeviceFactory, Services, wait_for


def add_user(
    svc: Services, name: str, role: str, password: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "user", "add", name, "--role", role, "--password-stdin"],
        input=password + "\n",
        text=True,
        env=svc.env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )


def test_roles_are_enforced(services: Services) -> None:
    assert add_user(services, "wang.li", "staff", "correct horse battery").returncode == 0
    token = services.login("wang.li", "correct horse battery")
    staff = {"Authorization": f"Bearer {token}"}
    assert services.http.get("/api/auth/me", headers=staff).json() == {
        "name": "wang.li",
        "role": "staff",
    }
    assert services.http.get("/api/alerts", headers=staff).status_code == 200
    r = services.http.patch("/api/admin/rooms/T1-0101", json={"in_service": False}, headers=staff)
    assert r.status_code == 403 and r.json() == {"detail": "needs the admin role"}
    assert (
        services.admin("PATCH", "/api/admin/rooms/T1-0101", json={"in_service": False}).status_code
        == 200
    )
    # Opening hours the live room list could not read are refused, not stored.
    r = services.admin("PATCH", "/api/admin/rooms/T1-0101", json={"hours": "08:00-24:30"})
    assert r.status_code == 422 and "hours" in r.text
    assert services.http.get("/api/rooms/T1-0101").status_code == 200
    # Anonymous: rooms and the public stream only.
    assert services.http.get("/api/rooms").status_code == 200
    for path in ("/api/alerts", "/api/admin/registry", "/api/auth/me"):
        assert services.http.get(path).status_code == 401
    bogus = {"Authorization": "Bearer not-a-token"}
    assert services.http.get("/api/alerts", headers=bogus).status_code == 401


def test_wrong_passwords_are_refused_then_slowed_never_locked_out(services: Services) -> None:
    assert add_user(services, "zhao", "staff", "short").returncode == 2  # too short
    for _ in range(5):
        r = services.http.post("/api/auth/token", data={"username": "admin", "password": "x"})
        assert r.status_code == 401 and r.json() == {"detail": "wrong name or password"}

    # After the free attempts a delay, not a lockout: the right password gets in
    # at the first try after it (auth.backoff_base_s, 1 s here).
    def right() -> bool:
        r = services.http.post(
            "/api/auth/token", data={"username": "admin", "password": Services.ADMIN_PASSWORD}
        )
        assert r.status_code in (200, 429), r.text
        assert r.status_code == 200 or int(r.headers["retry-after"]) >= 1
        return r.status_code == 200

    wait_for(right, timeout=30, interval=0.2, what="the right password accepted")
    assert "login failed" in services.server.log()
    assert Services.ADMIN_PASSWORD not in services.server.log()  # never a secret in the logs


def test_security_headers(services: Services) -> None:
    r = services.http.get("/api/rooms")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    page = services.http.get("/")
    assert (
        page.status_code == 200
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )


async def test_security_headers_keep_what_a_route_set() -> None:
    """The middleware adds each header only where the response has none."""

    async def framed(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"X-Frame-Options": "SAMEORIGIN"})

    app = SecurityHeaders(Starlette(routes=[Route("/", framed)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.get("/")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    for name, value in SECURITY_HEADERS.items():
        if name != "X-Frame-Options":
            assert r.headers[name] == value


def test_admin_manages_accounts_and_adopts_a_device(
    services: Services, device_factory: DeviceFactory
) -> None:
    r = services.admin(
        "PUT", "/api/admin/users/chen", json={"role": "manager", "password": "a fine password"}
    )
    assert r.status_code == 204
    token = services.login("chen", "a fine password")
    me = {"Authorization": f"Bearer {token}"}
    assert services.http.get("/api/auth/me", headers=me).json()["role"] == "manager"
    assert {u["name"] for u in services.admin("GET", "/api/admin/users").json()} >= {
        "admin",
        "chen",
    }
    assert services.admin("DELETE", "/api/admin/users/chen").status_code == 204
    assert services.http.get("/api/auth/me", headers=me).status_code == 401  # logged out
    assert services.admin("DELETE", "/api/admin/users/admin").status_code == 409

    # A node the registry does not know is refused, remembered, then adopted.
    ghost = device_factory("ghost-7")
    ghost.occupancy(True)
    wait_for(
        lambda: (
            [u["device"] for u in services.admin("GET", "/api/devices").json()["unknown"]]
            == ["ghost-7"]
        ),
        what="an unknown device",
    )
    r = services.admin("POST", "/api/admin/devices/ghost-7/adopt", json={"room": "T1-0301"})
    assert r.status_code == 200 and r.json()["device"] == "ghost-7"
    ghost.occupancy(False)
    services.wait_room_state("T1-0301", "free")
    assert services.admin("GET", "/api/devices").json()["unknown"] == []


def test_browser_session_with_csrf(services: Services) -> None:
    import httpx

    browser = httpx.Client(base_url=services.base_url, timeout=10)
    r = browser.post(
        "/api/auth/session", data={"username": "admin", "password": Services.ADMIN_PASSWORD}
    )
    assert r.status_code == 200
    csrf = r.json()["csrf_token"]
    cookie = r.headers.get_list("set-cookie")
    assert any(
        "mamaroom_session=" in c and "HttpOnly" in c and "SameSite=strict" in c for c in cookie
    )
    assert browser.get("/api/alerts").status_code == 200  # reading needs no CSRF token
    # A change with the cookie alone (what a forged cross-site form sends) is refused.
    r = browser.post("/api/alerts/999/ack")
    assert r.status_code == 403 and r.json() == {"detail": "CSRF token missing or wrong"}
    r = browser.post("/api/alerts/999/ack", headers={"X-CSRF-Token": "0" * 32})
    assert r.status_code == 403
    r = browser.post("/api/alerts/999/ack", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404  # past authentication: the alert does not exist
    r = browser.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert browser.get("/api/alerts").status_code == 401  # the session is over
    # Bearer tokens end the same way.
    token = services.login("admin", Services.ADMIN_PASSWORD)
    bearer = {"Authorization": f"Bearer {token}"}
    assert services.http.post("/api/auth/logout", headers=bearer).status_code == 204
    assert services.http.get("/api/auth/me", headers=bearer).status_code == 401
