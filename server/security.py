"""Who is asking: bearer tokens (API clients) or a session cookie with a CSRF
token (the pages) to users; roles on routes; security headers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
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


async def optional_user(ctx: Ctx, request: Request,
                        token: Annotated[str | None, Depends(oauth2)]) -> User | None:
    """The caller, from a bearer token or a session cookie; None if anonymous.
    A cookie alone never authorises a change: unsafe methods must also carry
    the session's CSRF token in X-CSRF-Token (a forged form cannot)."""
    if token:
        return await ctx.accounts.user_for_token(token)
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), csrf_for(session)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token missing or wrong")
    return await ctx.accounts.user_for_token(session)


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required",
                            headers={"WWW-Authenticate": "Bearer"})
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
