"""The shipped TLS set-up for the pages: Debian's nginx with
deploy/nginx/mamaroom.conf and a certificate from deploy/'s make-certs.sh,
in front of a real server. Logging in over https gives Secure, HttpOnly,
SameSite cookies, HSTS is sent, and plain http only redirects.

Measured on main before: deploy/ served 0.0.0.0:8000 over plain http, the
cookies had no Secure flag, and there was no HSTS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.nginx import Nginx, make_certs, needs_nginx
from tests.support import Mosquitto, Services, wait_for

pytestmark = needs_nginx


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def services(broker: Mosquitto, tmp_path: Path, rooms_csv: Path) -> Iterator[Services]:
    # nginx on this machine is the one proxy whose X-Forwarded-* is believed
    # (deploy/mamaroom.toml says the same).
    svc = Services(
        broker, tmp_path, rooms_csv, MAMAROOM_SERVER__TRUSTED_PROXIES='["127.0.0.1"]'
    ).start()
    yield svc
    svc.stop()


@pytest.fixture
def proxied(services: Services, tmp_path: Path, certs: Path) -> Iterator[Nginx]:
    nginx = Nginx(tmp_path / "nginx-run", services.http_port, certs).start()
    yield nginx
    nginx.stop()


def test_login_over_https_gives_secure_cookies_and_hsts(
    services: Services, proxied: Nginx, certs: Path
) -> None:
    trust = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    # The mothers' page on the public listener: over https, with HSTS.
    with httpx.Client(base_url=proxied.public_url, verify=trust, timeout=10) as public:
        wait_for(
            lambda: public.get("/api/site").status_code == 200,
            timeout=30,
            what="the server through nginx's public listener",
        )
        page = public.get("/")
        assert page.status_code == 200
        assert page.headers["strict-transport-security"] == "max-age=31536000"
    # Logins on the staff listener (the public one has none: test_surfaces_nginx.py).
    with httpx.Client(base_url=proxied.staff_url, verify=trust, timeout=10) as web:
        wait_for(
            lambda: web.get("/healthz").status_code == 200,
            timeout=30,
            what="the server through nginx's staff listener",
        )
        assert web.get("/staff").headers["strict-transport-security"] == "max-age=31536000"
        r = web.post(
            "/api/auth/session", data={"username": "admin", "password": Services.ADMIN_PASSWORD}
        )
        assert r.status_code == 200, r.text
        cookies = r.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("mamaroom_session="))
        flags = {f.strip().lower() for f in session.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict"} <= flags
        assert all("secure" in c.lower() for c in cookies)
        # The session works over https: the staff-only alert list answers.
        assert web.get("/api/alerts").status_code == 200
    # Plain http only redirects to https.
    r = httpx.get(f"http://127.0.0.1:{proxied.http_port}/", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"].startswith("https://")
    # Straight to the server, over http: no Secure flag (the flag follows the scheme).
    r = services.http.post(
        "/api/auth/session", data={"username": "admin", "password": Services.ADMIN_PASSWORD}
    )
    assert "secure" not in r.headers["set-cookie"].lower()
