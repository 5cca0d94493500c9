"""Login: the OAuth2 password flow, returning a bearer token."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from mamaroom.logs import get_logger
from server.context import Ctx
from server.security import CSRF_COOKIE, SESSION_COOKIE, csrf_for, current_user, oauth2
from server.services.accounts import TOKEN_TTL_S, LoginRefused, User

router = APIRouter(prefix="/api/auth", tags=["auth"])
log = get_logger(__name__)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = TOKEN_TTL_S
    role: str


class Me(BaseModel):
    name: str
    role: str


@router.post(
    "/token",
    response_model=Token,
    responses={
        401: {"description": "Wrong name or password"},
        429: {"description": "Too many failed logins: wait Retry-After"},
        503: {"description": "Too many logins at once: wait Retry-After"},
    },
)
async def login(
    ctx: Ctx, request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token:
    user = await _check_login(ctx, request, form)
    return Token(access_token=await ctx.accounts.issue_token(user), role=user.role)


class Session(BaseModel):
    role: str
    #: Send it back as the X-CSRF-Token header on every POST/PUT/PATCH/DELETE.
    csrf_token: str


async def _check_login(ctx: Ctx, request: Request, form: OAuth2PasswordRequestForm) -> User:
    """The user, or an HTTP error. The limiter's slot is taken before the first
    await (LoginLimiter.admit) and always given back."""
    address = request.client.host if request.client else "?"
    try:
        ticket = ctx.login_limiter.admit(form.username, address)
    except LoginRefused as exc:
        ctx.login_limiter.refused(exc)
        raise HTTPException(
            exc.status, str(exc), headers={"Retry-After": str(math.ceil(exc.retry_after_s))}
        ) from None
    try:
        user = await ctx.accounts.check_password(form.username, form.password)
    except BaseException:
        ctx.login_limiter.abandon(ticket)
        raise
    if user is None:
        ctx.login_limiter.failed(ticket)
        log.warning("login failed", user=form.username, addr=address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    ctx.login_limiter.succeeded(ticket)
    log.info("login", user=user.name, role=user.role, addr=address)
    return user


@router.post(
    "/session",
    response_model=Session,
    responses={
        401: {"description": "Wrong name or password"},
        429: {"description": "Too many failed logins: wait Retry-After"},
        503: {"description": "Too many logins at once: wait Retry-After"},
    },
)
async def open_session(
    ctx: Ctx,
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Session:
    """Login for the pages: an HttpOnly session cookie, plus a CSRF token."""
    user = await _check_login(ctx, request, form)
    token = await ctx.accounts.issue_token(user)
    secure = request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=TOKEN_TTL_S,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_for(token),
        max_age=TOKEN_TTL_S,
        httponly=False,
        samesite="strict",
        secure=secure,
        path="/",
    )
    return Session(role=user.role, csrf_token=csrf_for(token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    ctx: Ctx,
    request: Request,
    token: Annotated[str | None, Depends(oauth2)],
    _: Annotated[User, Depends(current_user)],
) -> Response:
    """End this session (cookie) or token."""
    ended = token or request.cookies.get(SESSION_COOKIE)
    if ended:
        await ctx.accounts.revoke(ended)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=Me)
async def me(user: Annotated[User, Depends(current_user)]) -> Me:
    return Me(name=user.name, role=user.role)
