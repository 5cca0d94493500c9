"""The shipped TLS set-up for the pages: Debian's nginx with
deploy/nginx/mamaroom.conf and a certificate from deploy/'s make-certs.sh,
in front of a real server. Logging in over https gives Secure, HttpOnly,
SameSite cookies, HSTS is sent, and plain http only redirects.

Measured on main before: deploy/ served 0.0.0.0:8000 over plain http, the
cookies had no Secure flag, and there was no HSTS."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, Mosquitto, Services, free_port, wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX),
                                reason="nginx missing: `make test` installs Debian's nginx")


class Nginx:
    """The shipped site config, with only ports, paths and the upstream templated."""

    def __init__(self, workdir: Path, upstream_port: int, certs: Path) -> None:
        self.workdir = workdir
        self.http_port, self.https_port = free_port(), free_port()
        site = (ROOT / "deploy" / "nginx" / "mamaroom.conf").read_text()
        site = "\n".join(line for line in site.splitlines() if "[::]" not in line)
        site = (site.replace("listen 80;", f"listen 127.0.0.1:{self.http_port};")
                .replace("listen 443 ssl", f"listen 127.0.0.1:{self.https_port} ssl")
                .replace("/etc/mamaroom/certs", str(certs))
                .replace("127.0.0.1:8000", f"127.0.0.1:{upstream_port}"))
        assert site.count(f"proxy_pass http://127.0.0.1:{upstream_port};") == 2
        assert str(certs) in site
        (workdir / "site.conf").write_text(site)
        temp = workdir / "temp"
        temp.mkdir()
        (workdir / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {workdir}/site.conf;
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        conf = str(self.workdir / "nginx.conf")
        subprocess.run([NGINX, "-t", "-c", conf], check=True, capture_output=True)
        self.proc = subprocess.Popen([NGINX, "-c", conf, "-g", "daemon off;"])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    out = tmp_path / "certs"
    subprocess.run([str(ROOT / "deploy" / "mosquitto" / "make-certs.sh"), str(out),
                    "localhost", "127.0.0.1"], env={**os.environ, "CERT_NAME": "web"},
                   check=True, capture_output=True)
    return out


@pytest.fixture
def services(broker: Mosquitto, tmp_path: Path, rooms_csv: Path) -> Iterator[Services]:
    # nginx on this machine is the one proxy whose X-Forwarded-* is believed
    # (deploy/mamaroom.toml says the same).
    svc = Services(broker, tmp_path, rooms_csv,
                   MAMAROOM_SERVER__TRUSTED_PROXIES='["127.0.0.1"]').start()
    yield svc
    svc.stop()


@pytest.fixture
def proxied(services: Services, tmp_path: Path, certs: Path) -> Iterator[Nginx]:
    run = tmp_path / "nginx-run"
    run.mkdir()
    nginx = Nginx(run, services.http_port, certs).start()
    yield nginx
    nginx.stop()


def test_login_over_https_gives_secure_cookies_and_hsts(services: Services, proxied: Nginx,
                                                         certs: Path) -> None:
    base = f"https://127.0.0.1:{proxied.https_port}"
    trust = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with httpx.Client(base_url=base, verify=trust, timeout=10) as web:
        wait_for(lambda: web.get("/healthz").status_code == 200, timeout=30,
                 what="the server through nginx")
        page = web.get("/")
        assert page.status_code == 200
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        r = web.post("/api/auth/session", data={"username": "admin",
                                                "password": Services.ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        cookies = r.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("mamaroom_session="))
        flags = {f.strip().lower() for f in session.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict"} <= flags
        assert all("secure" in c.lower() for c in cookies)
        # The session works over https: the staff-only alert list answers.
        assert web.get("/api/alerts").status_code == 200
    # Plain http only redirects to https.
    r = httpx.get(f"http://127.0.0.1:{proxied.http_port}/staff", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"].startswith("https://")
    # Straight to the server, over http: no Secure flag (the flag follows the scheme).
    r = services.http.post("/api/auth/session", data={"username": "admin",
                                                       "password": Services.ADMIN_PASSWORD})
    assert "secure" not in r.headers["set-cookie"].lower()
