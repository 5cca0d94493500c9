"""Web Push (RFC 8030, VAPID RFC 8292) to phones whose page is closed.

Two kinds of subscription, kept in the server's database:
- a mother's, with no account: "tell me when one of these rooms is free".
  It is sent once, when one of its rooms becomes available, then deleted
  (and it lapses after `MOTHER_TTL_S` in any case);
- a staff member's (logged in): every new emergency call, or, when
  escalation tiers name Web Push, the pages of those tiers (the `push`
  paging channel, paging/webpush.py).
Sending goes through pywebpush (payload encryption, VAPID signature) to the
push service named in the subscription's endpoint (`paging.webpush.push_one`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pydantic import BaseModel, Field

from mamaroom.config import PagesSettings
from mamaroom.logs import get_logger
from mamaroom.storage.sqlite_base import SqliteDatabase
from paging.webpush import Outcome, Vapid, push_one
from server.services.fanout import Fanout
from server.services.rooms import PublicRoom

log = get_logger(__name__)

MOTHER_TTL_S = 2 * 3600
#: How long a push service keeps an undelivered message (phone off).
PUSH_TTL_S = {"mother": 15 * 60, "staff": 3600}

SCHEMA = """
CREATE TABLE IF NOT EXISTS push_subscriptions (
    endpoint TEXT PRIMARY KEY,
    body TEXT NOT NULL,             -- the browser's PushSubscription JSON
    kind TEXT NOT NULL,             -- 'mother' or 'staff'
    who TEXT,                       -- staff: the account
    rooms TEXT NOT NULL DEFAULT '[]',
    lang TEXT NOT NULL DEFAULT 'zh',
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER
);
"""


class SubscriptionKeys(BaseModel):
    p256dh: str = Field(min_length=10, max_length=200)
    auth: str = Field(min_length=4, max_length=100)


class Subscription(BaseModel):
    """A browser's PushSubscription, as `JSON.stringify(subscription)` gives it."""

    endpoint: str = Field(pattern=r"^https?://", max_length=2000)
    keys: SubscriptionKeys


def make_vapid_keys() -> tuple[str, str]:
    """(public, private): base64url, the forms browsers and pywebpush take."""
    vapid = Vapid02()
    vapid.generate_keys()
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    private = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    return _b64(public), _b64(private)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushDb(SqliteDatabase):
    component = "push"
    schema = SCHEMA

    async def save(
        self,
        sub: Subscription,
        kind: str,
        *,
        who: str | None = None,
        rooms: list[str] | None = None,
        lang: str = "zh",
        expires_ms: int | None = None,
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO push_subscriptions VALUES (?,?,?,?,?,?,?,?)",
                    (
                        sub.endpoint,
                        sub.model_dump_json(),
                        kind,
                        who,
                        json.dumps(rooms or []),
                        lang,
                        int(time.time() * 1000),
                        expires_ms,
                    ),
                )

        await self._run(run)

    async def delete(self, endpoint: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with db:
                return (
                    db.execute(
                        "DELETE FROM push_subscriptions WHERE endpoint=?", (endpoint,)
                    ).rowcount
                    > 0
                )

        return await self._run(run)

    async def count_mothers_before(self, before_ms: int) -> int:
        """Mothers' reminders set before `before_ms` (each holds a phone's push address)."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT count(*) FROM push_subscriptions WHERE kind='mother' AND created_ms < ?",
                (before_ms,),
            ).fetchone()
        )
        return int(row[0])

    async def delete_mothers_before(self, before_ms: int, limit: int = 500) -> int:
        """One batch of the mothers' reminders set before `before_ms`. Staff
        phones' subscriptions stay: they are the staff's, until unsubscribed."""

        def run(db: sqlite3.Connection) -> int:
            with db:
                return db.execute(
                    "DELETE FROM push_subscriptions WHERE endpoint IN (SELECT endpoint FROM"
                    " push_subscriptions WHERE kind='mother' AND created_ms < ? LIMIT ?)",
                    (before_ms, limit),
                ).rowcount

        return await self._run(run)

    async def delete_lapsed(self, now_ms: int, limit: int = 500) -> int:
        """One batch of subscriptions past their expiry (a mother's: 2 h after
        she set it); without one (staff phones) they stay."""

        def run(db: sqlite3.Connection) -> int:
            with db:
                return db.execute(
                    "DELETE FROM push_subscriptions WHERE endpoint IN (SELECT endpoint FROM"
                    " push_subscriptions WHERE expires_ms < ? LIMIT ?)",
                    (now_ms, limit),
                ).rowcount

        return await self._run(run)

    async def count(self, kind: str, now_ms: int) -> int:
        """Subscriptions of `kind` not yet lapsed."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT count(*) FROM push_subscriptions WHERE kind=? AND (expires_ms IS NULL"
                " OR expires_ms >= ?)",
                (kind, now_ms),
            ).fetchone()
        )
        return int(row[0])

    async def of_kind(self, kind: str, now_ms: int) -> list[dict[str, Any]]:
        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            with db:
                db.execute("DELETE FROM push_subscriptions WHERE expires_ms < ?", (now_ms,))
            cur = db.execute(
                "SELECT endpoint, body, who, rooms, lang FROM push_subscriptions WHERE kind=?",
                (kind,),
            )
            return [
                {
                    "endpoint": e,
                    "sub": json.loads(b),
                    "who": w,
                    "rooms": json.loads(r),
                    "lang": lang,
                }
                for e, b, w, r, lang in cur.fetchall()
            ]

        return await self._run(run)


def room_free_message(room: PublicRoom, lang: str, url: str) -> dict[str, Any]:
    if lang == "en":
        return {
            "title": "A nursing room is free",
            "body": f"{room.name_en} is free now.",
            "url": url,
            "tag": f"free-{room.id}",
        }
    return {
        "title": "母婴室有空位了",
        "body": f"{room.name} 现在空闲。",
        "url": url,
        "tag": f"free-{room.id}",
    }


def call_message(alert: dict[str, Any], room_name: str, url: str) -> dict[str, Any]:
    test = "【测试】" if alert.get("test") else ""
    return {
        "title": f"{test}紧急呼叫 · Emergency call",
        "body": f"{room_name}（{alert['room']}）",
        "url": url,
        "tag": f"alert-{alert['id']}",
        "requireInteraction": True,
    }


class WebPush:
    """Sends the pushes; `run()` follows the live events of one server."""

    def __init__(
        self,
        db: PushDb,
        settings: PagesSettings,
        public_url: str,
        room_name: Callable[[str], str],
        *,
        staff_url: str | None = None,
        staff_calls: bool = True,
    ) -> None:
        """`staff_calls`: push every new call to every staff phone at once.
        Off when escalation tiers page Web Push themselves (`push:` targets),
        so a phone is not told twice."""
        self.db = db
        self.public_key = settings.vapid_public_key
        self._vapid = Vapid(
            settings.vapid_private_key or "", settings.vapid_subject, settings.push_hosts
        )
        self._staff_calls = staff_calls
        self._public_url = public_url.rstrip("/")
        #: The staff console's address: on the intranet, not the public surface.
        self._staff_url = (staff_url or public_url).rstrip("/")
        self._room_name = room_name
        self.push_hosts = settings.push_hosts
        self._called: set[int] = set()
        #: Pushes accepted by a push service (for tests and metrics).
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return bool(self.public_key and self._vapid.private_key)

    async def send(self, sub: dict[str, Any], message: dict[str, Any], ttl: int) -> bool:
        """One push; False (and the subscription deleted when the push service
        says it is gone) if no push service took it."""
        outcome = await asyncio.to_thread(push_one, sub, message, self._vapid, ttl)
        if outcome is Outcome.GONE:
            await self.db.delete(sub["endpoint"])
        if outcome is not Outcome.SENT:
            return False
        self.sent += 1
        return True

    async def room_changed(self, room: PublicRoom) -> None:
        if not room.available:
            return
        for s in await self.db.of_kind("mother", int(time.time() * 1000)):
            if room.id in s["rooms"]:
                await self.db.delete(s["endpoint"])  # once: the reminder is used up
                url = f"{self._public_url}/r/{room.id}"
                await self.send(
                    s["sub"], room_free_message(room, s["lang"], url), PUSH_TTL_S["mother"]
                )

    async def alert_changed(self, alert: dict[str, Any]) -> None:
        if not self._staff_calls or alert.get("kind") != "call" or alert.get("status") != "open":
            return
        if alert["id"] in self._called:
            return
        self._called.add(alert["id"])
        name = self._room_name(alert["room"]) if alert.get("room") else "?"
        message = call_message(alert, name, f"{self._staff_url}/staff")
        for s in await self.db.of_kind("staff", int(time.time() * 1000)):
            await self.send(s["sub"], message, PUSH_TTL_S["staff"])

    async def run(self, fanout: Fanout) -> None:
        """Follow room and alert changes like a staff stream client."""
        while True:
            with fanout.subscribe(staff=True) as queue:
                while (item := await queue.get()) is not None:
                    event, data, _ = item
                    try:
                        if event == "room":
                            await self.room_changed(data)
                        elif event == "alert":
                            await self.alert_changed(data)
                    except Exception:  # a bad push must not stop the others
                        log.exception("push handling failed", push_event=event)
            log.warning("push follower fell behind; resubscribing")
