"""Login: the OAuth2 password flow, returning a bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from mamaroom.logs import get_logger
from server.context import Ctx
from server.security import current_user
from server.services.accounts import TOKEN_TTL_S, User

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


@router.post("/token", response_model=Token,
             responses={401: {"description": "Wrong name or password"},
                        429: {"description": "Too many failed logins"}})
async def login(ctx: Ctx, request: Request,
                form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    keys = (f"user:{form.username}", f"addr:{request.client.host if request.client else '?'}")
    if ctx.login_limiter.blocked(*keys):
        log.warning("login refused: too many failures", user=form.username)
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            "too many failed logins; try again in a few minutes")
    user = await ctx.accounts.check_password(form.username, form.password)
    if user is None:
        ctx.login_limiter.failed(*keys)
        log.warning("login failed", user=form.username)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong name or password",
                            headers={"WWW-Authenticate": "Bearer"})
    ctx.login_limiter.succeeded(*keys)
    log.info("login", user=user.name, role=user.role)
    return Token(access_token=await ctx.accounts.issue_token(user), role=user.role)


@router.get("/me", response_model=Me)
async def me(user: Annotated[User, Depends(current_user)]) -> Me:
    return Me(name=user.name, role=user.role)
