"""Who is asking: bearer tokens to users, roles on routes, security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordBearer

from server.context import Ctx
from server.services.accounts import Role, User

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


async def current_user(ctx: Ctx, token: Annotated[str | None, Depends(oauth2)]) -> User:
    user = await ctx.accounts.user_for_token(token) if token else None
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


async def security_headers(request: Request,
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
