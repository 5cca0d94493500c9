"""Public or staff: every route of the app is classified (server/surfaces.py),
the proxy's public allow-list (deploy/nginx/mamaroom.conf) is exactly the
public set, and the mothers' pages load nothing from the staff side. The
same list run by the real nginx: tests/security/test_surfaces_nginx.py."""

from __future__ import annotations

import re
from typing import Any

import httpx

from dashboard import ROOT as DASHBOARD
from mamaroom.config import Settings
from server.app import create_app
from server.surfaces import PUBLIC, PUBLIC_STATIC, STAFF, SURFACE_HEADER, is_public
from tests.security.nginx import SHIPPED
from tests.support import Device, Services, sse_events, wait_for
from tests.test_route_roles import app_routes

#: Sample values for the routes' path parameters.
VALUES = {
    "room_id": "T1-0101",
    "alert_id": "1",
    "name": "admin",
    "device": "dev-a",
    "version": "1.2.3",
}
STAFF_FILES = sorted(
    p.name for p in (DASHBOARD / "static").iterdir() if p.name not in PUBLIC_STATIC
)


def samples(method: str, path: str) -> list[tuple[str, str]]:
    """Concrete requests for a route: (method, path)."""
    if path == "/static/{path}":
        files = sorted(PUBLIC_STATIC) if (method, path) in PUBLIC else STAFF_FILES
        paths = [f"/static/{f}" for f in files]
    elif path == "/vendor/{path}":
        paths = ["/vendor/echarts.min.js", "/vendor/axe.min.js"]
    else:
        paths = [path.format(**VALUES)]
    return [(method, p) for p in paths]


def nginx_allow_list() -> list[re.Pattern[str]]:
    """The regexes of the public listener's map, as nginx (PCRE) reads them."""
    text = SHIPPED.read_text()
    block = re.search(r'map "\$request_method \$uri" \$mamaroom_public \{(.*?)\n\}', text, re.S)
    assert block, "no public allow-list map in the shipped nginx config"
    out = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("default"):
            continue
        m = re.fullmatch(r'"~(.+)"\s+1;', line)
        assert m, f"an allow-list line this test cannot read: {line!r}"
        out.append(re.compile(m.group(1)))
    return out


def test_every_route_is_public_or_staff() -> None:
    routes = app_routes(create_app(Settings()).routes)
    assert not PUBLIC & STAFF, f"both public and staff: {PUBLIC & STAFF}"
    unclassified = routes - PUBLIC - STAFF
    assert not unclassified, (
        f"routes in neither PUBLIC nor STAFF (server/surfaces.py): {sorted(unclassified)}"
    )
    gone = (PUBLIC | STAFF) - routes
    assert not gone, f"classified but not served any more: {sorted(gone)}"
    assert "staff.js" in STAFF_FILES and "mothers.js" not in STAFF_FILES


def test_the_nginx_allow_list_is_the_public_set() -> None:
    allow = nginx_allow_list()
    used: set[str] = set()
    for method, path in sorted(PUBLIC):
        for m, p in samples(method, path):
            hits = [rx.pattern for rx in allow if rx.match(f"{m} {p}")]
            assert hits, f"public {m} {p} is not on nginx's allow-list"
            used.update(hits)
    for method, path in sorted(STAFF):
        for m, p in samples(method, path):
            hits = [rx.pattern for rx in allow if rx.match(f"{m} {p}")]
            assert not hits, f"staff route {m} {p} passes nginx's public listener: {hits}"
    unused = {rx.pattern for rx in allow} - used
    assert not unused, f"nginx allows what no public route serves: {unused}"
    # A public path with another method, a path below a public one: not public.
    for m, p in [
        ("POST", "/api/rooms"),
        ("DELETE", "/api/rooms/T1-0101"),
        ("GET", "/api/rooms/T1-0101/x"),
        ("GET", "/r/"),
        ("PUT", "/api/push/reminder"),
        ("GET", "/static/"),
        ("GET", "/static/sub/mothers.js"),
        ("GET", "//api/alerts"),
        ("HEAD", "/api/rooms"),
        ("OPTIONS", "/api/push/reminder"),
    ]:
        assert not any(rx.match(f"{m} {p}") for rx in allow), (m, p)
        assert not is_public(m, p), (m, p)


def test_the_server_reads_the_same_list() -> None:
    for routes, public in ((PUBLIC, True), (STAFF, False)):
        for method, path in routes:
            for m, p in samples(method, path):
                assert is_public(m, p) is public, (m, p)


def test_the_mothers_pages_load_only_public_files() -> None:
    for page in ("index.html", "room.html"):
        html = (DASHBOARD / page).read_text()
        refs = re.findall(r'(?:src|href)="(/[^"]*)"', html)
        assert refs, page
        for ref in refs:
            if ref == "/staff":  # the footer's link, hidden on the public side (mothers.js)
                continue
            assert is_public("GET", ref.split("?")[0]), f"{page} loads {ref}: not public"
    js = (DASHBOARD / "static" / "mothers.js").read_text()
    for literal in re.findall(r'["`](/(?:api|static|r)/[^"`$?]*)', js):
        if literal.endswith("/"):
            literal += "T1-0101"
        for method in ("GET", "POST"):
            if is_public(method, literal):
                break
        else:
            raise AssertionError(f"mothers.js uses {literal}: not public")


def _public(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {SURFACE_HEADER: "public", **(headers or {})}


def test_requests_marked_public_get_only_public_routes(services: Services) -> None:
    """What the proxy's public listener sends (X-Mamaroom-Surface: public):
    404 outside the public set, and no login counts."""
    http = services.http
    token = services.login("admin", services.ADMIN_PASSWORD)
    admin = {"Authorization": f"Bearer {token}"}
    assert http.get("/api/alerts", headers=admin).status_code == 200  # unmarked: intranet
    for path in (
        "/api/alerts",
        "/api/auth/me",
        "/staff",
        "/metrics",
        "/readyz",
        "/openapi.json",
        "/static/staff.js",
        "/api/admin/users",
    ):
        r = http.get(path, headers=_public(admin))
        assert r.status_code == 404, (path, r.status_code)
        assert r.headers["x-content-type-options"] == "nosniff"  # still the security headers
    r = http.post(
        "/api/auth/token",
        headers=_public(),
        data={"username": "admin", "password": services.ADMIN_PASSWORD},
    )
    assert r.status_code == 404
    page = http.get("/", headers=_public(admin))
    assert page.status_code == 200 and page.headers[SURFACE_HEADER.lower()] == "public"
    assert SURFACE_HEADER.lower() not in http.get("/").headers
    assert http.get("/r/T1-0101", headers=_public()).status_code == 200
    # A staff token on the public surface is no login: the staff-only push route
    # is not there, and the stream carries no alerts.
    sub = {
        "endpoint": "https://fcm.googleapis.com/fcm/send/x",
        "keys": {"p256dh": "B" * 40, "auth": "a" * 16},
    }
    assert (
        http.post("/api/push/staff", json={"subscription": sub}, headers=_public(admin)).status_code
        == 404
    )
    _no_alerts_on_the_public_stream(services, admin)


def _no_alerts_on_the_public_stream(services: Services, admin: dict[str, str]) -> None:
    """An open call exists; a staff stream gets it at once after the snapshot,
    a stream marked public with the same token does not."""
    node, other = Device(services.broker.port, "dev-a"), Device(services.broker.port, "dev-b")
    try:
        node.call("press", "surface-1")
        wait_for(lambda: services.admin("GET", "/api/alerts").json(), what="the call stored")
        staff = sse_events(f"{services.base_url}/api/stream", headers=admin)
        assert [next(staff)[0], next(staff)[0]] == ["snapshot", "alert"]
        staff.close()
        public = sse_events(f"{services.base_url}/api/stream", headers=_public(admin))
        assert next(public)[0] == "snapshot"
        other.occupancy(True)  # a later room event: anything before it was the backlog
        seen: list[tuple[str, Any]] = []
        for event in public:
            seen.append(event)
            if event[0] == "room":
                break
        public.close()
        assert [e for e, _ in seen if e != "room"] == [], seen
    finally:
        node.close()
        other.close()


def test_unmarked_requests_are_untouched(services: Services) -> None:
    """Only the exact header value marks a request; a direct or intranet
    request is served as before."""
    r = services.http.get("/staff", headers={SURFACE_HEADER: "staff"})
    assert r.status_code == 200
    assert httpx.get(f"{services.base_url}/healthz", timeout=10).status_code == 200
