"""WeChat for the mothers' page (docs/wechat.md): the silent OAuth round trip
that tells the server who she is (her openid, kept server-side behind a
cookie), the JS-SDK signature for the subscribe button, and her "tell me
when a room near me is free" reminder. No login; 404 when WeChat is off."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from mamaroom.logs import get_logger
from server.api.public import AnonymousWrite
from server.context import Ctx
from server.services.wechat import (
    MAX_REMINDERS,
    REMINDER_TTL_S,
    SESSION_TTL_S,
    WechatError,
    WechatService,
    event_signature_ok,
    is_local_path,
    parse_events,
)

log = get_logger(__name__)
router = APIRouter(tags=["wechat"])

#: Her WeChat session: a random value standing for her openid (HttpOnly).
SESSION_COOKIE = "mamaroom_wx"
#: Readable by the page, sent back in CSRF_HEADER with every change.
CSRF_COOKIE = "mamaroom_wx_csrf"
CSRF_HEADER = "X-Wechat-CSRF"
#: The OAuth round trip's state and where to return, for ten minutes.
STATE_COOKIE = "mamaroom_wx_oauth"
STATE_TTL_S = 600


def _wechat(ctx: Ctx) -> WechatService:
    if not ctx.wechat.enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "WeChat is not configured")
    return ctx.wechat


WechatDep = Annotated[WechatService, Depends(_wechat)]


def csrf_for(sid: str) -> str:
    return hashlib.sha256(b"wechat-csrf:" + sid.encode()).hexdigest()[:32]


def _secure(wechat: WechatService) -> bool:
    return wechat.public_url.startswith("https://")


def _pack(state: str, next_path: str) -> str:
    return state + "." + base64.urlsafe_b64encode(next_path.encode()).decode().rstrip("=")


def _unpack(value: str) -> tuple[str, str] | None:
    state, _, packed = value.partition(".")
    try:
        next_path = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (state, next_path) if state and is_local_path(next_path) else None


@router.get(
    "/wechat/oauth/start",
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {"description": "To WeChat's OAuth page (snsapi_base)"},
        404: {"description": "WeChat is not configured"},
    },
)
async def oauth_start(
    wechat: WechatDep, next: Annotated[str, Query(max_length=1000)] = "/"
) -> RedirectResponse:
    """Send the mother through WeChat's silent OAuth (`snsapi_base`) and back
    to `next` (a path on this site), her openid then known to the server."""
    assert wechat.api is not None
    if not is_local_path(next):
        next = "/"
    state = secrets.token_hex(16)  # a-zA-Z0-9, at most 128 bytes: WeChat's rule
    response = RedirectResponse(wechat.api.authorize_url(wechat.callback_url, state), 302)
    response.set_cookie(
        STATE_COOKIE,
        _pack(state, next),
        max_age=STATE_TTL_S,
        httponly=True,
        samesite="lax",
        secure=_secure(wechat),
        path="/wechat/oauth",
    )
    return response


@router.get(
    "/wechat/oauth/callback",
    response_class=RedirectResponse,
    status_code=303,
    responses={
        303: {"description": "Back to the page the mother came from"},
        400: {"description": "State missing or not this browser's (CSRF)"},
        404: {"description": "WeChat is not configured"},
    },
)
async def oauth_callback(
    wechat: WechatDep,
    request: Request,
    state: Annotated[str, Query(max_length=128)] = "",
    code: Annotated[str | None, Query(max_length=512)] = None,
) -> RedirectResponse:
    """WeChat's redirect after OAuth: `state` must be the one this browser
    was sent with (its cookie), so no other site can start a round trip for
    her; `code` becomes her openid, kept on the server behind a cookie."""
    assert wechat.api is not None
    packed = _unpack(request.cookies.get(STATE_COOKIE, ""))
    if packed is None or not state or not hmac.compare_digest(packed[0], state):
        log.warning("wechat OAuth callback with a state this browser was not given; refused")
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "OAuth state missing or wrong: start again from the page"
        )
    next_path = packed[1]
    if not code:  # she declined (snsapi_userinfo only; snsapi_base never asks)
        response = RedirectResponse(f"{next_path}#wx-denied", 303)
    else:
        try:
            openid = await wechat.api.openid_for_code(code)
        except WechatError as exc:
            log.warning(
                "wechat OAuth code not exchanged", errcode=exc.errcode, error=exc.errmsg[:200]
            )
            response = RedirectResponse(f"{next_path}#wx-failed", 303)
        else:
            sid = await wechat.db.new_session(openid)
            response = RedirectResponse(f"{next_path}#wx-ready", 303)
            secure = _secure(wechat)
            response.set_cookie(
                SESSION_COOKIE,
                sid,
                max_age=SESSION_TTL_S,
                httponly=True,
                samesite="lax",
                secure=secure,
                path="/",
            )
            response.set_cookie(
                CSRF_COOKIE,
                csrf_for(sid),
                max_age=SESSION_TTL_S,
                samesite="lax",
                secure=secure,
                path="/",
            )
            log.info("wechat OAuth done: the mother's openid is known for this session")
    response.delete_cookie(STATE_COOKIE, path="/wechat/oauth")
    return response


class WechatConfig(BaseModel):
    #: WeChat is configured on this server.
    enabled: bool
    #: This browser has a WeChat session (the server knows who she is).
    ready: bool = False
    #: This browser's mother has a reminder waiting.
    waiting: bool = False
    app_id: str | None = None
    template_id: str | None = None
    jssdk_url: str | None = None


async def _openid(ctx: Ctx, request: Request) -> str | None:
    sid = request.cookies.get(SESSION_COOKIE)
    return await ctx.wechat.db.openid_for(sid) if sid and ctx.wechat.enabled else None


@router.get("/api/wechat/config", response_model=WechatConfig)
async def wechat_config(ctx: Ctx, request: Request) -> WechatConfig:
    """What the page needs to offer WeChat: never the openid itself."""
    if not ctx.wechat.enabled:
        return WechatConfig(enabled=False)
    s = ctx.wechat.settings
    openid = await _openid(ctx, request)
    return WechatConfig(
        enabled=True,
        ready=openid is not None,
        waiting=openid is not None and await ctx.wechat.db.has_reminder(openid),
        app_id=s.app_id,
        template_id=s.template_id,
        jssdk_url=s.jssdk_url,
    )


class JsConfig(BaseModel):
    app_id: str
    timestamp: int
    nonce_str: str
    signature: str


@router.get(
    "/api/wechat/jssdk",
    response_model=JsConfig,
    responses={
        404: {"description": "WeChat is not configured"},
        422: {"description": "Not a page of this site"},
        503: {"description": "WeChat's API cannot be reached"},
    },
)
async def jssdk(wechat: WechatDep, url: Annotated[str, Query(max_length=2000)]) -> JsConfig:
    """wx.config's signature for the page at `url` (its address without #...)."""
    assert wechat.api is not None
    if not url.startswith(wechat.public_url + "/") or "#" in url:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "url must be a page of this site (pages.public_url), without #",
        )
    try:
        return JsConfig(**await wechat.api.js_config(url))
    except WechatError as exc:
        log.warning("wechat JS-SDK ticket not had", errcode=exc.errcode, error=exc.errmsg[:200])
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "WeChat cannot be reached; try again later"
        ) from None


class WechatReminder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Tell me when one of these rooms is free (at most 50).
    rooms: list[Annotated[str, Field(max_length=32)]] = Field(min_length=1, max_length=50)
    lang: str = Field("zh", pattern="^(zh|en)$")


async def _session_openid(ctx: Ctx, request: Request) -> str:
    """Her openid, from the session cookie; a change must also carry the
    session's CSRF token in X-Wechat-CSRF (a forged form cannot)."""
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "no WeChat session: open the page from WeChat first"
        )
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), csrf_for(sid)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token missing or wrong")
    openid = await ctx.wechat.db.openid_for(sid)
    if openid is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "WeChat session over; start again")
    return openid


@router.post(
    "/api/wechat/reminder",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AnonymousWrite],
    responses={
        401: {"description": "No WeChat session"},
        403: {"description": "CSRF token missing or wrong"},
        404: {"description": "WeChat is not configured"},
        429: {"description": "Too many reminders from this client or in all"},
        503: {"description": "Too many reminders waiting"},
    },
)
async def wechat_reminder(
    ctx: Ctx, wechat: WechatDep, request: Request, body: WechatReminder
) -> Response:
    """After she agreed in WeChat's subscribe button: one message through the
    service account when one of `rooms` is free. Lapses after 2 h."""
    openid = await _session_openid(ctx, request)
    known = {r.id for r in ctx.registry.current.rooms}
    unknown = [r for r in body.rooms if r not in known]
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no room {unknown[0]!r}")
    if (
        not await wechat.db.has_reminder(openid)
        and await wechat.db.count_reminders() >= MAX_REMINDERS
    ):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "too many reminders waiting; try again later"
        )
    await wechat.db.save_reminder(
        openid, list(dict.fromkeys(body.rooms)), body.lang, REMINDER_TTL_S
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/api/wechat/reminder",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AnonymousWrite],
    responses={
        401: {"description": "No WeChat session"},
        403: {"description": "CSRF token missing or wrong"},
        404: {"description": "WeChat is not configured"},
        429: {"description": "Too many requests from this client or in all"},
    },
)
async def cancel_wechat_reminder(ctx: Ctx, wechat: WechatDep, request: Request) -> Response:
    """Forget her reminder (and with it her openid's rooms)."""
    await wechat.db.delete_reminder(await _session_openid(ctx, request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


#: What a push from WeChat may weigh (its events are a few hundred bytes).
MAX_EVENT_BYTES = 16_384


def _signed(
    wechat: WechatDep,
    signature: Annotated[str, Query(max_length=64)],
    timestamp: Annotated[str, Query(max_length=32)],
    nonce: Annotated[str, Query(max_length=64)],
) -> WechatService:
    """Only WeChat knows the token: anything else pushing here is refused."""
    token = wechat.settings.token
    if not token:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "WeChat event pushes are not configured")
    if not event_signature_ok(token, signature, timestamp, nonce):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "bad signature")
    return wechat


#: A request WeChat signed with the account's token (its query carries the signature).
SignedByWechat = Annotated[WechatService, Depends(_signed)]


@router.get(
    "/wechat/events",
    response_class=PlainTextResponse,
    responses={403: {"description": "Bad signature"}, 404: {"description": "Not configured"}},
)
async def wechat_events_check(
    _: SignedByWechat, echostr: Annotated[str, Query(max_length=256)]
) -> str:
    """WeChat's check of the server URL (服务器配置): echo `echostr` back."""
    return echostr


@router.post(
    "/wechat/events",
    response_class=PlainTextResponse,
    responses={
        400: {"description": "Not the documented XML"},
        403: {"description": "Bad signature"},
        404: {"description": "Not configured"},
        413: {"description": "Too large"},
    },
)
async def wechat_events(wechat: SignedByWechat, request: Request) -> str:
    """WeChat pushes the mothers' subscribe choices here (plaintext or
    compatible mode): a "cancel" deletes her reminder at once. Answers
    `success`, as WeChat asks, or it pushes again."""
    body = await request.body()
    if len(body) > MAX_EVENT_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "too large")
    try:
        events = parse_events(body, wechat.settings.template_id)
    except ValueError as exc:
        log.warning("wechat: a push that is not the documented XML", error=str(exc)[:200])
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "not the documented XML") from None
    await wechat.on_events(events)
    return "success"
