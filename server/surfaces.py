"""The two surfaces of the server: what may face the internet, and what stays
on the intranet.

- **public**: the mothers' pages (`/`, `/r/{room}`), the few static files
  they load, room and site data, the live stream, wait estimates and
  reminders. No login, no personal data (tests/test_privacy.py). Safe to
  expose to the internet behind the shipped reverse proxy
  (deploy/nginx/mamaroom.conf: its public listener allows exactly these,
  and answers 404 to everything else).
- **staff**: the staff console, admin, trends, logins, metrics, health,
  firmware bundles and every staff API. Only on the intranet listener.

Every route the app serves is in exactly one of PUBLIC and STAFF: a test
(tests/test_surfaces.py) enumerates the app's routes and fails on one that
is in neither, so a new route cannot reach the internet without a decision,
and it checks the proxy's allow-list against PUBLIC.

The proxy marks requests that came in on its public listener with
`X-Mamaroom-Surface: public`. The server then answers 404 to anything
outside PUBLIC too (a second line, should the proxy's list ever grow), and
ignores credentials on them: a staff token sent over the internet gets a
mother's view, never the staff's alerts. The header can only take rights
away, so it needs no trust in who sent it.
"""

from __future__ import annotations

import json
import re
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: (method, path) of the public routes; a path in the app's own spelling
#: (`{name}` is one path segment; a mount's files are `{path}`).
PUBLIC: Final = frozenset(
    {
        # The mothers' pages, their service worker and manifest.
        ("GET", "/"),
        ("GET", "/r/{room_id}"),
        ("GET", "/sw.js"),
        ("GET", "/manifest.webmanifest"),
        ("GET", "/static/{path}"),  # only the files in PUBLIC_STATIC
        # Room and site data, the live stream, wait estimates (server/api/rooms.py, public.py).
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/{room_id}"),
        ("GET", "/api/stream"),
        ("GET", "/api/site"),
        ("GET", "/api/wait"),
        # Reminders: "tell me when a room near me is free" (Web Push).
        ("GET", "/api/push/key"),
        ("POST", "/api/push/reminder"),
        ("POST", "/api/push/unsubscribe"),
        # The same through the park's WeChat service account (docs/wechat.md):
        # WeChat's OAuth round trip, the subscribe button's signature, the reminder.
        ("GET", "/wechat/oauth/start"),
        ("GET", "/wechat/oauth/callback"),
        ("GET", "/api/wechat/config"),
        ("GET", "/api/wechat/jssdk"),
        ("POST", "/api/wechat/reminder"),
        ("DELETE", "/api/wechat/reminder"),
        # WeChat's own servers push the mothers' subscribe choices (signed).
        ("GET", "/wechat/events"),
        ("POST", "/wechat/events"),
    }
)

#: The files under /static the mothers' pages load (dashboard/index.html,
#: room.html); the staff pages' scripts stay on the intranet.
PUBLIC_STATIC: Final = frozenset({"common.js", "mothers.js", "style.css", "icon.svg"})

#: Everything else the app serves: intranet only.
STAFF: Final = frozenset(
    {
        # Pages: the console, admin, trends; their scripts and libraries.
        ("GET", "/staff"),
        ("GET", "/admin"),
        ("GET", "/trends"),
        ("GET", "/vendor/{path}"),
        ("GET", "/openapi.json"),
        # Logins and accounts.
        ("POST", "/api/auth/token"),
        ("POST", "/api/auth/session"),
        ("POST", "/api/auth/logout"),
        ("GET", "/api/auth/me"),
        # Alerts, devices, staff push.
        ("GET", "/api/alerts"),
        ("GET", "/api/alerts/{alert_id}"),
        ("POST", "/api/alerts/{alert_id}/ack"),
        ("POST", "/api/alerts/{alert_id}/resolve"),
        ("GET", "/api/devices"),
        ("POST", "/api/push/staff"),
        # Admin.
        ("GET", "/api/admin/registry"),
        ("PUT", "/api/admin/rooms/{room_id}"),
        ("PATCH", "/api/admin/rooms/{room_id}"),
        ("DELETE", "/api/admin/rooms/{room_id}"),
        ("PUT", "/api/admin/rooms/{room_id}/test-mode"),
        ("GET", "/api/admin/rooms.csv"),
        ("POST", "/api/admin/rooms/import"),
        ("GET", "/api/admin/users"),
        ("PUT", "/api/admin/users/{name}"),
        ("DELETE", "/api/admin/users/{name}"),
        ("POST", "/api/admin/devices/{device}/adopt"),
        ("POST", "/api/admin/devices/{device}/move"),
        ("GET", "/api/admin/roster"),
        ("PUT", "/api/admin/roster"),
        # Trends (managers).
        ("GET", "/api/trends/heatmap"),
        ("GET", "/api/trends/rooms"),
        ("GET", "/api/trends/sessions"),
        ("GET", "/api/trends/calls"),
        ("GET", "/api/trends/uptime"),
        # Operations: health, readiness, metrics; firmware bundles for the nodes.
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/firmware"),
        ("GET", "/api/firmware/{version}.bundle"),
        ("GET", "/api/firmware/{version}.sha256"),
    }
)

SURFACE_HEADER: Final = "X-Mamaroom-Surface"
_SURFACE_KEY = SURFACE_HEADER.lower().encode()
#: Request headers dropped on the public surface: no login reaches the server from there.
_CREDENTIALS = frozenset({b"authorization", b"cookie"})
#: The only cookies kept there: a mother's WeChat session, OAuth state and
#: CSRF token (server/api/wechat.py), which give no staff rights.
_PUBLIC_COOKIES = ("mamaroom_wx", "mamaroom_wx_csrf", "mamaroom_wx_oauth")


def _public_cookies(value: bytes) -> bytes:
    kept = [
        c.strip()
        for c in value.split(b";")
        if c.strip().split(b"=", 1)[0].decode("latin-1") in _PUBLIC_COOKIES
    ]
    return b"; ".join(kept)


def _pattern(path: str) -> str:
    if path == "/static/{path}":
        return "/static/(?:" + "|".join(re.escape(f) for f in sorted(PUBLIC_STATIC)) + ")"
    return re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path))


_PUBLIC_RE: Final = {
    method: re.compile(
        "^(?:" + "|".join(_pattern(p) for m, p in sorted(PUBLIC) if m == method) + ")$"
    )
    for method in {m for m, _ in PUBLIC}
}


def is_public(method: str, path: str) -> bool:
    """May this request be answered on the public surface? (Exactly the
    methods the app serves: its routes answer HEAD with 405.)"""
    pattern = _PUBLIC_RE.get(method)
    return bool(pattern and pattern.match(path))


class PublicSurface:
    """Pure ASGI: requests the proxy marked as public get 404 outside PUBLIC,
    and reach the app without credentials; their answers carry the mark too.
    Unmarked requests pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _marked_public(scope):
            await self.app(scope, receive, send)
            return
        if not is_public(scope["method"], scope["path"]):
            body = json.dumps({"detail": "Not Found"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _CREDENTIALS]
        headers += [
            (k, kept)
            for k, v in scope["headers"]
            if k == b"cookie" and (kept := _public_cookies(v))
        ]
        scope = {**scope, "headers": headers}

        async def marked(message: Message) -> None:
            # The page learns where it is (mothers.js hides its staff link).
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (_SURFACE_KEY, b"public")],
                }
            await send(message)

        await self.app(scope, receive, marked)


def _marked_public(scope: Scope) -> bool:
    return any(k == _SURFACE_KEY and v.strip().lower() == b"public" for k, v in scope["headers"])
