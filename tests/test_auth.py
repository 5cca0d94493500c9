"""Accounts, roles, login rate limiting and security headers, on a real server."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT, Services


def add_user(svc: Services, name: str, role: str,
             password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mamaroom", "user", "add", name, "--role", role,
                           "--password-stdin"], input=password + "\n", text=True, env=svc.env,
                          cwd=ROOT, capture_output=True, timeout=60)


def test_roles_are_enforced(services: Services) -> None:
    assert add_user(services, "wang.li", "staff", "correct horse battery").returncode == 0
    token = services.login("wang.li", "correct horse battery")
    staff = {"Authorization": f"Bearer {token}"}
    assert services.http.get("/api/auth/me", headers=staff).json() == {
        "name": "wang.li", "role": "staff"}
    assert services.http.get("/api/alerts", headers=staff).status_code == 200
    r = services.http.patch("/api/admin/rooms/T1-0101", json={"in_service": False},
                            headers=staff)
    assert r.status_code == 403 and r.json() == {"detail": "needs the admin role"}
    assert services.admin("PATCH", "/api/admin/rooms/T1-0101",
                          json={"in_service": False}).status_code == 200
    # Anonymous: rooms and the public stream only.
    assert services.http.get("/api/rooms").status_code == 200
    for path in ("/api/alerts", "/api/admin/registry", "/api/auth/me"):
        assert services.http.get(path).status_code == 401
    bogus = {"Authorization": "Bearer not-a-token"}
    assert services.http.get("/api/alerts", headers=bogus).status_code == 401


def test_wrong_passwords_are_refused_then_rate_limited(services: Services) -> None:
    assert add_user(services, "zhao", "staff", "short").returncode == 2  # too short
    for _ in range(5):
        r = services.http.post("/api/auth/token", data={"username": "admin", "password": "x"})
        assert r.status_code == 401 and r.json() == {"detail": "wrong name or password"}
    r = services.http.post("/api/auth/token",
                           data={"username": "admin", "password": Services.ADMIN_PASSWORD})
    assert r.status_code == 429  # even the right password, until the window passes
    assert "login failed" in services.server.log()
    assert Services.ADMIN_PASSWORD not in services.server.log()  # never a secret in the logs


def test_security_headers(services: Services) -> None:
    r = services.http.get("/api/rooms")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    page = services.http.get("/")
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]
