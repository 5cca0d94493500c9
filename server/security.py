"""Who is asking: bearer tokens (API clients) or a session cookie with a CSRF
token (the pages) to users; roles on routes; security headers."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.context import Ctx
from server.services.accounts import Role, User

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)
SESSION_COOKIE = "mamaroom_session"
CSRF_COOKIE = "mamaroom_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def csrf_for(session_token: str) -> str:
    """The session's CSRF token, derived from it (nothing more to store)."""
    return hashlib.sha256(b"csrf:" + session_token.encode()).hexdigest()[:32]


async def optional_user(
    ctx: Ctx, request: Request, token: Annotated[str | None, Depends(oauth2)]
) -> User | None:
    """The caller, from a bearer token or a session cookie; None if anonymous.
    A cookie alone never authorises a change: unsafe methods must also carry
    the session's CSRF token in X-CSRF-Token (a forged form cannot)."""
    if token:
        return await ctx.accounts.user_for_token(token)
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        request.headers.get(CSRF_HEADER, ""), csrf_for(session)
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token missing or wrong")
    return await ctx.accounts.user_for_token(session)


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "login required", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


def require(role: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency: the caller must hold `role` or a higher one."""

    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.has(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs the {role} role")
        return user

    return check


StaffUser = Annotated[User, Depends(require("staff"))]
ManagerUser = Annotated[User, Depends(require("manager"))]
AdminUser = Annotated[User, Depends(require("admin"))]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Everything is served from here: no CDN, no inline scripts.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response, keeping any a route set.

    Pure ASGI on purpose: Starlette's BaseHTTPMiddleware (`app.middleware("http")`)
    runs each request in an extra task and passes every body chunk through
    memory streams, which was most of the per-client cost of a live stream
    (bench/sse_fanout.py). This only touches `http.response.start`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: The login routes (server/api/auth.py).
LOGIN_PATHS = frozenset({"/api/auth/token", "/api/auth/session"})


class LoginGate:
    """Answers the logins the limiter would refuse anyway (all login slots
    busy: 503; this address must wait: 429) before the app sees them.

    In a login flood almost every request is one of these, and the time spent
    on each is taken on the event loop the emergency calls use
    (bench/login_storm.py); answered here, outside FastAPI's middleware and
    routing and without parsing the form, they cost a fraction. The route
    still runs the full check (LoginLimiter.admit) for the rest. Wraps the
    app from outside (server/connections.py), so it takes the FastAPI app to
    find the limiter in its state once the lifespan has made it."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in LOGIN_PATHS and scope["method"] == "POST":
            ctx = getattr(self.app.state, "ctx", None)
            client = scope.get("client")
            limiter = ctx.login_limiter if ctx is not None else None
            refusal = limiter.precheck(client[0] if client else "?") if limiter else None
            if limiter is not None and refusal is not None:
                limiter.refused(refusal)
                await send(
                    {
                        "type": "http.response.start",
                        "status": refusal.status,
                        "headers": _refusal_headers(refusal.retry_after_s),
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": json.dumps({"detail": str(refusal)}).encode(),
                    }
                )
                return
        await self.app(scope, receive, send)


def _refusal_headers(retry_after_s: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"retry-after", str(math.ceil(retry_after_s)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
    ]
