"""Debian's nginx with the shipped site config (deploy/nginx/mamaroom.conf),
only its ports, paths and upstream templated: the public listener (443),
its http redirect (80) and the staff listener (8443), each on a free port
of 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SHIPPED = ROOT / "deploy" / "nginx" / "mamaroom.conf"
needs_nginx = pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx missing: `make test` installs Debian's nginx"
)


def make_certs(out: Path) -> Path:
    """The site CA and a `web` certificate for 127.0.0.1, copied as the public
    listener's too (a public CA's in production)."""
    subprocess.run(
        [str(ROOT / "deploy" / "mosquitto" / "make-certs.sh"), str(out), "localhost", "127.0.0.1"],
        env={**os.environ, "CERT_NAME": "web"},
        check=True,
        capture_output=True,
    )
    for ext in ("crt", "key"):
        shutil.copy(out / f"web.{ext}", out / f"public.{ext}")
    return out


class Nginx:
    def __init__(self, workdir: Path, upstream_port: int, certs: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.public_port, self.staff_port = free_port(), free_port(), free_port()
        site = SHIPPED.read_text()
        site = "\n".join(line for line in site.splitlines() if "[::]" not in line)
        replaced = {
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen 443 ssl": f"listen 127.0.0.1:{self.public_port} ssl",
            "listen 8443 ssl": f"listen 127.0.0.1:{self.staff_port} ssl",
            "/etc/mamaroom/certs": str(certs),
            "127.0.0.1:8000": f"127.0.0.1:{upstream_port}",
            "/var/log/nginx/": f"{workdir}/",
        }
        for old, new in replaced.items():
            assert old in site, f"the shipped config changed: no {old!r}"
            site = site.replace(old, new)
        (workdir / "site.conf").write_text(site)
        temp = workdir / "temp"
        temp.mkdir(exist_ok=True)
        (workdir / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 1024; }}
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

    @property
    def public_url(self) -> str:
        return f"https://127.0.0.1:{self.public_port}"

    @property
    def staff_url(self) -> str:
        return f"https://127.0.0.1:{self.staff_port}"

    def start(self) -> Nginx:
        conf = str(self.workdir / "nginx.conf")
        check = subprocess.run([NGINX, "-t", "-c", conf], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([NGINX, "-c", conf, "-g", "daemon off;"])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def public_log(self) -> str:
        path = self.workdir / "mamaroom-public.log"
        return path.read_text() if path.exists() else ""
