"""The park's WeChat service account (服务号): a mother's openid learnt through
OAuth (`snsapi_base`), and "a room near you is free" sent to her once as a
one-time subscription notification (订阅通知).

What WeChat's documentation specifies, and what this does about it
(docs/wechat.md has the flow and the sources):

- the access token comes from `POST /cgi-bin/stable_token` (normal mode) and
  is cached until shortly before `expires_in` runs out; one fetch at a time.
  When the API says the token is invalid or expired (40001, 40014, 42001)
  it is fetched again and the call repeated, once. If WeChat hands back the
  very token it just refused, the force-refresh mode is used, at most once
  every 30 s (WeChat allows 20 a day, 30 s apart);
- "system busy" (-1), a network error and an HTTP 5xx are tried again,
  `wechat.tries` times in all, with a doubling pause;
- a send the mother never agreed to, or whose one-time agreement is used
  up (43101), is logged and forgotten: never tried again;
- the minute quota (45011) is tried once more after `wechat.quota_retry_s`;
  the daily quota (45009) drops the message, logged as an error.

Nothing here blocks the event loop: every call is async httpx, and sends run
in their own task behind a queue, never in the room-change follower.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import httpx

from mamaroom.config import WechatSettings
from mamaroom.logs import get_logger
from mamaroom.storage.sqlite_base import SqliteDatabase
from server.services.fanout import Fanout
from server.services.rooms import PublicRoom

log = get_logger(__name__)

#: A mother's reminder lapses after this long, as a Web Push one does; her
#: WeChat session (the openid behind a cookie) as well.
REMINDER_TTL_S = 2 * 3600
SESSION_TTL_S = 2 * 3600
#: Reminders waiting at once (as pages' Web Push reminders: server/api/public.py).
MAX_REMINDERS = 5000

#: Global return codes (全局返回码) this module acts on.
SYSTEM_BUSY = -1
TOKEN_INVALID = frozenset({40001, 40014, 42001})
INVALID_OPENID = 40003
INVALID_CODE = 40029
USER_REFUSED = 43101
DAILY_QUOTA = 45009
MINUTE_QUOTA = 45011

#: Force-refresh mode of stable_token: at most once in this many seconds.
FORCE_REFRESH_GAP_S = 30.0
#: The first pause before trying a busy or unreachable API again; it doubles.
RETRY_BASE_S = 0.5
#: Messages waiting to be sent; beyond it a message is dropped (logged).
OUTBOX_SIZE = 10_000
#: Lapsed reminders and sessions are deleted this often.
PURGE_EVERY_S = 600.0

#: What a template keyword may hold (订阅通知 parameter limits).
VALUE_LIMITS = {"thing": 20, "phrase": 5, "character_string": 32, "letter": 32}

SCHEMA = """
CREATE TABLE IF NOT EXISTS wechat_reminders (
    openid TEXT PRIMARY KEY,        -- the mother, for this service account only
    rooms TEXT NOT NULL,            -- JSON list of room ids
    lang TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS wechat_sessions (
    sid_hash TEXT PRIMARY KEY,      -- SHA-256 of the cookie's value
    openid TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
"""


class WechatError(Exception):
    """WeChat answered with an error code (or could not be reached: errcode None)."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


def _now_ms() -> int:
    return int(time.time() * 1000)


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class WechatDb(SqliteDatabase):
    """Reminders (openid, rooms, expiry) and OAuth sessions (cookie → openid)."""

    component = "wechat"
    schema = SCHEMA

    async def save_reminder(
        self, openid: str, rooms: list[str], lang: str, ttl_s: float = REMINDER_TTL_S
    ) -> None:
        now = _now_ms()

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO wechat_reminders VALUES (?,?,?,?,?)",
                    (openid, json.dumps(rooms), lang, now, now + int(ttl_s * 1000)),
                )

        await self._run(run)

    async def delete_reminder(self, openid: str) -> bool:
        return await self._run(
            lambda db: _delete(db, "DELETE FROM wechat_reminders WHERE openid=?", (openid,)) > 0
        )

    async def has_reminder(self, openid: str) -> bool:
        row = await self._run(
            lambda db: db.execute(
                "SELECT 1 FROM wechat_reminders WHERE openid=? AND expires_ms >= ?",
                (openid, _now_ms()),
            ).fetchone()
        )
        return row is not None

    async def count_reminders(self) -> int:
        row = await self._run(
            lambda db: db.execute(
                "SELECT count(*) FROM wechat_reminders WHERE expires_ms >= ?", (_now_ms(),)
            ).fetchone()
        )
        return int(row[0])

    async def take_for_room(self, room_id: str) -> list[tuple[str, str]]:
        """(openid, lang) of every live reminder for `room_id`, deleted in the
        same transaction: each is used once, even with two servers on one file."""
        now = _now_ms()

        def run(db: sqlite3.Connection) -> list[tuple[str, str]]:
            with db:
                rows = db.execute(
                    "SELECT openid, rooms, lang FROM wechat_reminders WHERE expires_ms >= ?", (now,)
                ).fetchall()
                taken = [(o, lang) for o, rooms, lang in rows if room_id in json.loads(rooms)]
                db.executemany(
                    "DELETE FROM wechat_reminders WHERE openid=?", [(o,) for o, _ in taken]
                )
            return taken

        return await self._run(run)

    async def new_session(self, openid: str, ttl_s: float = SESSION_TTL_S) -> str:
        """A fresh cookie value standing for `openid` (the cookie never holds it)."""
        sid = secrets.token_urlsafe(32)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO wechat_sessions VALUES (?,?,?)",
                    (_hash(sid), openid, _now_ms() + int(ttl_s * 1000)),
                )

        await self._run(run)
        return sid

    async def openid_for(self, sid: str) -> str | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT openid FROM wechat_sessions WHERE sid_hash=? AND expires_ms >= ?",
                (_hash(sid), _now_ms()),
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def purge(self) -> tuple[int, int]:
        """Delete lapsed reminders and sessions: (reminders, sessions) deleted."""
        now = _now_ms()

        def run(db: sqlite3.Connection) -> tuple[int, int]:
            with db:
                r = _delete(db, "DELETE FROM wechat_reminders WHERE expires_ms < ?", (now,))
                s = _delete(db, "DELETE FROM wechat_sessions WHERE expires_ms < ?", (now,))
            return r, s

        return await self._run(run)

    # Retention and `mamaroom purge` (server/services/retention.py): by when
    # each row was made. A session keeps only its expiry, SESSION_TTL_S after
    # it was made.
    _MADE = {  # noqa: RUF012 (a constant of the class, never mutated)
        "wechat_reminders": ("openid", "created_ms"),
        "wechat_sessions": ("sid_hash", f"expires_ms - {int(SESSION_TTL_S * 1000)}"),
    }

    async def count_made_before(self, table: str, before_ms: int) -> int:
        """Rows of `table` (wechat_reminders, wechat_sessions) made before `before_ms`."""
        _key, made = self._MADE[table]
        row = await self._run(
            lambda db: db.execute(
                f"SELECT count(*) FROM {table} WHERE {made} < ?", (before_ms,)
            ).fetchone()
        )
        return int(row[0])

    async def delete_made_before(self, table: str, before_ms: int, limit: int) -> int:
        """One batch of the rows of `table` made before `before_ms`."""
        key, made = self._MADE[table]
        return await self._run(
            lambda db: _delete(
                db,
                f"DELETE FROM {table} WHERE {key} IN"
                f" (SELECT {key} FROM {table} WHERE {made} < ? LIMIT ?)",
                (before_ms, limit),
            )
        )

    async def delete_lapsed(self, table: str, now_ms: int, limit: int) -> int:
        """One batch of the rows of `table` past their expiry."""
        key, _made = self._MADE[table]
        return await self._run(
            lambda db: _delete(
                db,
                f"DELETE FROM {table} WHERE {key} IN"
                f" (SELECT {key} FROM {table} WHERE expires_ms < ? LIMIT ?)",
                (now_ms, limit),
            )
        )


def _delete(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    with db:
        return db.execute(sql, args).rowcount


def event_signature_ok(token: str, signature: str, timestamp: str, nonce: str) -> bool:
    """A push from WeChat to the account's server URL: `signature` is the
    SHA-1 of the token, timestamp and nonce, sorted and joined."""
    expected = hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


#: The pushes about subscription notifications (订阅通知事件推送) and the
#: element that holds their <List> items.
_EVENT_LISTS = {
    "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
    "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
    "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
}


@dataclass(frozen=True)
class WechatEvent:
    """One pushed event about our template: who (openid), what, the choice
    (`accept`/`reject`) or a send's outcome (`success` or an error)."""

    openid: str
    event: str
    status: str


def parse_events(body: bytes, template_id: str) -> list[WechatEvent]:
    """The subscription events in a push (XML), for `template_id` only;
    other messages and other templates are none of ours. ValueError if the
    body is not the documented XML."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    event = (root.findtext("Event") or "").strip()
    if (root.findtext("MsgType") or "").strip() != "event" or event not in _EVENT_LISTS:
        return []
    openid = (root.findtext("FromUserName") or "").strip()
    if not openid:
        raise ValueError("no FromUserName")
    found = []
    for item in root.iterfind(f"{_EVENT_LISTS[event]}/List"):
        if (item.findtext("TemplateId") or "").strip() != template_id:
            continue
        status = item.findtext("SubscribeStatusString") or item.findtext("ErrorStatus") or ""
        found.append(WechatEvent(openid, event, status.strip()))
    return found


class WechatApi:
    """WeChat's server API: the cached access token, the OAuth code exchange,
    the JS-SDK ticket and signature, and sending a subscription notification."""

    def __init__(
        self, settings: WechatSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(timeout=settings.timeout_s, transport=transport)
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._token_until = 0.0
        self._forced_at = -FORCE_REFRESH_GAP_S
        self._ticket: str | None = None
        self._ticket_until = 0.0
        #: Access tokens fetched, and calls refused for the token (tests, logs).
        self.tokens_fetched = 0
        self.token_rejections = 0

    async def close(self) -> None:
        await self._http.aclose()

    # --- transport --------------------------------------------------------
    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One API call, tried again on a network error, HTTP 5xx or errcode -1."""
        delay = RETRY_BASE_S
        tries = self.settings.tries
        for attempt in range(1, tries + 1):
            problem: str
            try:
                r = await self._http.request(
                    method,
                    url,
                    params=params,
                    content=None if body is None else json.dumps(body, ensure_ascii=False).encode(),
                    headers=None if body is None else {"Content-Type": "application/json"},
                )
                if r.status_code >= 500:
                    problem = f"HTTP {r.status_code}"
                else:
                    data = r.json()
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    if data.get("errcode") != SYSTEM_BUSY:
                        return data
                    problem = "system busy (-1)"
                    if attempt == tries:
                        return data
            except (httpx.HTTPError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {str(exc)[:120]}"
            if attempt == tries:
                raise WechatError(None, f"WeChat API not usable after {tries} tries: {problem}")
            # The URL carries the token or the secret: only its path is logged.
            log.warning(
                "wechat API call failed; trying again",
                path=httpx.URL(url).path,
                problem=problem,
                attempt=attempt,
                pause_s=delay,
            )
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _url(self, path: str) -> str:
        return self.settings.api_base_url + path

    # --- the access token -------------------------------------------------
    async def access_token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._token_until:
                await self._fetch_token(force=False)
            assert self._token is not None
            return self._token

    async def _fetch_token(self, *, force: bool) -> None:
        data = await self._request(
            "POST",
            self._url("/cgi-bin/stable_token"),
            body={
                "grant_type": "client_credential",
                "appid": self.settings.app_id,
                "secret": self.settings.secret,
                "force_refresh": force,
            },
        )
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            self._token = None
            raise WechatError(data.get("errcode"), str(data.get("errmsg", "no access_token")))
        expires_in = float(data.get("expires_in") or 7200)
        self._token = token
        # WeChat renews a token 5 minutes before it ends and keeps the old one
        # valid meanwhile; a minute's margin is ours.
        self._token_until = time.monotonic() + max(30.0, expires_in - 60)
        self.tokens_fetched += 1
        if force:
            self._forced_at = time.monotonic()
        log.info("wechat access token fetched", force_refresh=force, expires_in=expires_in)

    async def _renew_after(self, rejected: str) -> str:
        async with self._lock:
            if self._token is not None and self._token != rejected:
                return self._token  # another call renewed it meanwhile
            self._token = None
            await self._fetch_token(force=False)
            if (
                self._token == rejected
                and time.monotonic() - self._forced_at >= FORCE_REFRESH_GAP_S
            ):
                await self._fetch_token(force=True)
            assert self._token is not None
            return self._token

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An API call with the access token; a refused token is renewed and the
        call repeated once. Raises WechatError for any other error code."""
        token = await self.access_token()
        for attempt in (1, 2):
            data = await self._request(
                method, self._url(path), params={**(params or {}), "access_token": token}, body=body
            )
            code = data.get("errcode") or 0
            if code in TOKEN_INVALID and attempt == 1:
                self.token_rejections += 1
                log.info("wechat access token refused; renewing it", errcode=code)
                token = await self._renew_after(token)
                continue
            if code:
                raise WechatError(code, str(data.get("errmsg", "")))
            return data
        raise AssertionError("unreachable")

    # --- what mamaroom uses -----------------------------------------------
    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """WeChat's OAuth page, silent (`snsapi_base`): back to `redirect_uri`
        with ?code=&state=. The order of the parameters is WeChat's."""
        query = str(
            httpx.QueryParams(
                [
                    ("appid", self.settings.app_id),
                    ("redirect_uri", redirect_uri),
                    ("response_type", "code"),
                    ("scope", "snsapi_base"),
                    ("state", state),
                ]
            )
        )
        return f"{self.settings.oauth_base_url}/connect/oauth2/authorize?{query}#wechat_redirect"

    async def openid_for_code(self, code: str) -> str:
        """The mother's openid for an OAuth code (each code works once, 5 min)."""
        data = await self._request(
            "GET",
            self._url("/sns/oauth2/access_token"),
            params={
                "appid": self.settings.app_id,
                "secret": self.settings.secret or "",
                "code": code,
                "grant_type": "authorization_code",
            },
        )
        openid = data.get("openid")
        if data.get("errcode") or not isinstance(openid, str) or not openid:
            raise WechatError(data.get("errcode"), str(data.get("errmsg", "no openid")))
        return openid

    async def jsapi_ticket(self) -> str:
        """The JS-SDK ticket, cached like the token (its quota is small)."""
        if self._ticket is None or time.monotonic() >= self._ticket_until:
            data = await self.call("GET", "/cgi-bin/ticket/getticket", params={"type": "jsapi"})
            ticket = data.get("ticket")
            if not isinstance(ticket, str) or not ticket:
                raise WechatError(data.get("errcode"), "no ticket")
            self._ticket = ticket
            self._ticket_until = time.monotonic() + max(
                30.0, float(data.get("expires_in") or 7200) - 60
            )
        return self._ticket

    async def js_config(self, url: str) -> dict[str, Any]:
        """wx.config's appId, timestamp, nonceStr and signature for the page at
        `url` (without its #fragment): sha1 of the sorted key=value pairs."""
        ticket = await self.jsapi_ticket()
        nonce, stamp = secrets.token_urlsafe(12), int(time.time())
        plain = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={stamp}&url={url}"
        return {
            "app_id": self.settings.app_id,
            "timestamp": stamp,
            "nonce_str": nonce,
            "signature": hashlib.sha1(plain.encode()).hexdigest(),
        }

    async def send_subscribe(self, openid: str, data: dict[str, str], page: str) -> None:
        """One subscription notification (`bizsend`); `page` is the web page it opens."""
        await self.call(
            "POST",
            "/cgi-bin/message/subscribe/bizsend",
            body={
                "touser": openid,
                "template_id": self.settings.template_id,
                "page": page,
                "data": {k: {"value": v} for k, v in data.items()},
            },
        )


def template_values(
    template: dict[str, str], room: PublicRoom, when: datetime, lang: str = "zh"
) -> dict[str, str]:
    """The template's keywords filled for `room`, each within WeChat's limits.
    The template itself is Chinese; an English page's mother gets the room's
    English name in it (a `phrase` keyword takes Chinese only)."""
    floor = f"地下{-room.floor}层" if room.floor < 0 else f"{room.floor}层"
    fields = {
        "room": room.name_en if lang == "en" else room.name,
        "place": f"{room.building}{floor}",
        "status": "空闲",
        "time": when.strftime("%H:%M"),
    }
    out = {}
    for key, pattern in template.items():
        value = pattern.format_map(fields)
        kind = key.rstrip("0123456789")
        limit = VALUE_LIMITS.get(kind)
        if limit and len(value) > limit:
            value = value[: limit - 1] + "…"
        out[key] = value
    return out


@dataclass
class Outgoing:
    openid: str
    room: PublicRoom
    lang: str
    requeued: bool = False


class WechatService:
    """Reminders through the service account: stored by the pages' API, sent
    by `run()` when a room frees up, then forgotten."""

    def __init__(
        self,
        settings: WechatSettings,
        db: WechatDb,
        public_url: str,
        tz: ZoneInfo,
        *,
        api: WechatApi | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.api = api if api is not None or not settings.enabled else WechatApi(settings)
        self._public_url = public_url.rstrip("/")
        self._tz = tz
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue(OUTBOX_SIZE)
        #: Outcomes of sends (logs and tests).
        self.sent = 0
        self.refused = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.settings.enabled and self.api is not None

    @property
    def callback_url(self) -> str:
        return f"{self._public_url}/wechat/oauth/callback"

    @property
    def public_url(self) -> str:
        return self._public_url

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()

    async def room_changed(self, room: PublicRoom) -> None:
        if not room.available:
            return
        for openid, lang in await self.db.take_for_room(room.id):
            try:
                self._outbox.put_nowait(Outgoing(openid, room, lang))
            except asyncio.QueueFull:
                self.failed += 1
                log.error("wechat outbox full; a room-free message was dropped", room=room.id)

    async def send(self, item: Outgoing) -> None:
        """One room-free message; every outcome logged, none raised."""
        assert self.api is not None
        values = template_values(
            self.settings.template_data, item.room, datetime.now(self._tz), item.lang
        )
        try:
            await self.api.send_subscribe(
                item.openid, values, f"{self._public_url}/r/{item.room.id}"
            )
        except WechatError as exc:
            self._failed(item, exc)
        else:
            self.sent += 1
            log.info("wechat room-free message sent", room=item.room.id)

    def _failed(self, item: Outgoing, exc: WechatError) -> None:
        code = exc.errcode
        if code == USER_REFUSED:
            self.refused += 1
            log.info(
                "wechat message refused: the mother did not agree to it, or no "
                "longer does (43101); forgotten, not tried again",
                room=item.room.id,
            )
        elif code == MINUTE_QUOTA and not item.requeued:
            log.warning(
                "wechat minute quota reached (45011); trying once more later",
                room=item.room.id,
                after_s=self.settings.quota_retry_s,
            )
            item.requeued = True
            asyncio.get_running_loop().call_later(self.settings.quota_retry_s, self._requeue, item)
        elif code == INVALID_OPENID:
            self.failed += 1
            log.warning(
                "wechat says the openid is not this account's user (40003); forgotten",
                room=item.room.id,
            )
        else:
            self.failed += 1
            what = {
                DAILY_QUOTA: "daily quota reached (45009): no more messages today",
                MINUTE_QUOTA: "minute quota reached again (45011)",
            }.get(code or 0, "")
            log.error(
                "wechat room-free message not sent; dropped",
                room=item.room.id,
                errcode=code,
                error=what or exc.errmsg[:200],
            )

    def _requeue(self, item: Outgoing) -> None:
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.failed += 1

    async def _sender(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                await self.send(item)
            except Exception:  # one bad message must not stop the others
                self.failed += 1
                log.exception("wechat send crashed", room=item.room.id)

    async def _purger(self) -> None:
        while True:
            try:
                reminders, sessions = await self.db.purge()
                if reminders or sessions:
                    log.info(
                        "wechat reminders and sessions lapsed; deleted",
                        reminders=reminders,
                        sessions=sessions,
                    )
            except Exception:
                log.exception("wechat purge failed; will retry")
            await asyncio.sleep(PURGE_EVERY_S)

    async def on_events(self, events: list[WechatEvent]) -> int:
        """What WeChat pushed: a mother who chose "cancel" in the subscribe
        popup, or later refused the notifications, has her reminder deleted at
        once (it could never be sent: 43101). Returns how many were deleted."""
        deleted = 0
        for e in events:
            if e.event == "subscribe_msg_sent_event":
                log.info("wechat: notification delivery", outcome=e.status)
            elif e.status == "reject" and await self.db.delete_reminder(e.openid):
                deleted += 1
                log.info("wechat: reminder refused by the mother; deleted", kind=e.event)
        return deleted

    async def run(self, fanout: Fanout) -> None:
        """Follow room changes like a stream client; send from their own task."""
        helpers = [asyncio.create_task(self._sender()), asyncio.create_task(self._purger())]
        try:
            while True:
                with fanout.subscribe() as queue:
                    while (item := await queue.get()) is not None:
                        event, data, _ = item
                        if event != "room":
                            continue
                        try:
                            await self.room_changed(data)
                        except Exception:
                            log.exception("wechat reminder handling failed")
                log.warning("wechat follower fell behind; resubscribing")
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)


def is_local_path(value: str) -> bool:
    """A path on this site (an open redirect is refused)."""
    return (
        value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) <= 1000
        and all(ord(c) > 32 and ord(c) != 127 for c in value)
    )
