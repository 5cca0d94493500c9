"""Every route × every role, against a running server. A route missing from
the table fails the test, so a new endpoint cannot ship without a decision."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
from starlette.routing import Mount

from mamaroom.config import Settings
from server.app import create_app
from tests.support import ROOT, Services

# The least role each route needs: None = public.
TABLE: dict[tuple[str, str], str | None] = {
    ("GET", "/api/rooms"): None,
    ("GET", "/api/rooms/{room_id}"): None,
    ("GET", "/api/stream"): None,
    ("POST", "/api/auth/token"): None,
    ("POST", "/api/auth/session"): None,
    ("POST", "/api/auth/logout"): "staff",
    ("GET", "/api/auth/me"): "staff",
    ("GET", "/api/alerts"): "staff",
    ("GET", "/api/alerts/{alert_id}"): "staff",
    ("POST", "/api/alerts/{alert_id}/ack"): "staff",
    ("POST", "/api/alerts/{alert_id}/resolve"): "staff",
    ("GET", "/api/devices"): "staff",
    ("GET", "/api/admin/registry"): "admin",
    ("PUT", "/api/admin/rooms/{room_id}"): "admin",
    ("PATCH", "/api/admin/rooms/{room_id}"): "admin",
    ("DELETE", "/api/admin/rooms/{room_id}"): "admin",
    ("PUT", "/api/admin/rooms/{room_id}/test-mode"): "admin",
    ("GET", "/api/admin/users"): "admin",
    ("PUT", "/api/admin/users/{name}"): "admin",
    ("DELETE", "/api/admin/users/{name}"): "admin",
    ("POST", "/api/admin/devices/{device}/adopt"): "admin",
    ("GET", "/api/trends/heatmap"): "manager",
    ("GET", "/api/trends/rooms"): "manager",
    ("GET", "/api/trends/sessions"): "manager",
    ("GET", "/api/trends/calls"): "manager",
    ("GET", "/api/trends/uptime"): "manager",
    # The pages (docs/pages.md).
    ("GET", "/api/site"): None,
    ("GET", "/api/wait"): None,
    ("GET", "/api/push/key"): None,
    ("POST", "/api/push/reminder"): None,
    ("POST", "/api/push/unsubscribe"): None,
    # The mothers' WeChat reminder: anonymous (a WeChat session cookie, not a login).
    ("GET", "/wechat/oauth/start"): None,
    ("GET", "/wechat/oauth/callback"): None,
    ("GET", "/api/wechat/config"): None,
    ("GET", "/api/wechat/jssdk"): None,
    ("POST", "/api/wechat/reminder"): None,
    ("DELETE", "/api/wechat/reminder"): None,
    # WeChat's servers, proven by the token's signature (tests/test_wechat.py).
    ("GET", "/wechat/events"): None,
    ("POST", "/wechat/events"): None,
    ("POST", "/api/push/staff"): "staff",
    ("GET", "/api/admin/rooms.csv"): "admin",
    ("POST", "/api/admin/rooms/import"): "admin",
    ("POST", "/api/admin/devices/{device}/move"): "admin",
    ("GET", "/api/admin/roster"): "admin",
    ("PUT", "/api/admin/roster"): "admin",
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    # Firmware bundles: nodes fetch them without credentials (a bundle holds no
    # secret and is checked against the sha256 sent over the broker).
    ("GET", "/api/firmware"): "staff",
    ("GET", "/api/firmware/{version}.bundle"): None,
    ("GET", "/api/firmware/{version}.sha256"): None,
    # Outside the API schema, but served all the same: the page, its files, the schema.
    ("GET", "/"): None,
    ("GET", "/static/{path}"): None,
    ("GET", "/openapi.json"): None,
    # The pages are public HTML; what staff, managers and admins see comes from
    # the API above, under its roles (docs/pages.md).
    ("GET", "/r/{room_id}"): None,
    ("GET", "/staff"): None,
    ("GET", "/trends"): None,
    ("GET", "/admin"): None,
    ("GET", "/sw.js"): None,
    ("GET", "/manifest.webmanifest"): None,
    ("GET", "/vendor/{path}"): None,
}
RANK = {None: 0, "staff": 1, "manager": 2, "admin": 3}
# Sample path values: an unknown room, so mutating routes touch nothing real.
VALUES = {
    "room_id": "NOPE",
    "alert_id": "999999",
    "name": "nobody",
    "device": "nobody",
    "version": "0.0.0",
    "path": "app.js",
}


def app_routes(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of everything the app serves, from app.routes, not the
    schema: a route left out of /openapi.json is still checked."""
    out: set[tuple[str, str]] = set()
    for route in routes:
        if hasattr(route, "original_router"):  # an included router (FastAPI >= 0.1xx)
            out |= app_routes(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            out.add(("GET", f"{prefix}{route.path}/{{path}}"))
        else:
            out |= {(m, prefix + route.path) for m in route.methods - {"HEAD"}}
    return out


def test_the_table_names_every_route_the_app_serves() -> None:
    routes = app_routes(create_app(Settings()).routes)
    assert routes == set(TABLE), f"routes not in the table: {routes ^ set(TABLE)}"


def test_every_route_for_every_role(services: Services) -> None:
    spec = services.http.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert routes <= set(TABLE), f"routes not in the table: {routes - set(TABLE)}"
    tokens: dict[str | None, str | None] = {None: None}
    for account_role in ("staff", "manager", "admin"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "user",
                "add",
                f"t-{account_role}",
                "--role",
                account_role,
                "--password-stdin",
            ],
            input="a long password\n",
            text=True,
            env=services.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        tokens[account_role] = services.login(f"t-{account_role}", "a long password")
    failures = []
    for (method, path), needed in sorted(TABLE.items(), key=str):
        if path in ("/api/stream", "/api/auth/logout"):
            continue  # an endless stream (tested in test_alerts); logout ends the token
            # (tested in test_auth)
        url = path.format(**VALUES)
        for role, token in tokens.items():
            services.http.cookies.clear()  # /api/auth/session sets a cookie; roles use tokens
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            kwargs: dict[str, Any] = {"headers": headers}
            if method in ("PUT", "PATCH", "POST") and "{" in path:
                kwargs["json"] = {}
            if path in ("/api/auth/token", "/api/auth/session"):
                kwargs["data"] = {"username": "t-staff", "password": "a long password"}
            r = services.http.request(method, url, **kwargs)
            allowed = RANK[role] >= RANK[needed]
            if allowed and r.status_code in (401, 403):
                failures.append(f"{method} {path} as {role}: {r.status_code}, expected access")
            if not allowed and r.status_code != (401 if role is None else 403):
                failures.append(f"{method} {path} as {role}: {r.status_code}, expected refusal")
            if r.status_code >= 500:
                failures.append(f"{method} {path} as {role}: {r.status_code}")
            if r.status_code >= 400 and not path.startswith("/r/"):
                assert "detail" in r.json(), (method, path, r.text)
            if r.status_code >= 400 and path.startswith("/r/"):  # a page, saying "no such room"
                assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert failures == []
    with httpx.stream("GET", f"{services.base_url}/api/stream", timeout=10) as resp:
        assert resp.status_code == 200  # the public stream needs no login
