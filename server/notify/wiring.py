"""Connects the paging channels to the alert service: page texts, link
state into `paging_link` alerts, page outcomes into the alert's timeline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

from mamaroom.contract import RegistryRoom
from mamaroom.logs import get_logger
from paging.channel import LinkChange, Wiring
from paging.webpush import STAFF
from server.services.alert_model import Alert
from server.services.alerts import AlertService
from server.services.webpush import PushDb

log = get_logger(__name__)

#: A page waits this long at most for the phones' subscriptions (on the
#: channel's thread, never the event loop).
PUSH_DB_TIMEOUT_S = 10.0


def call_text(alert: Alert, room: RegistryRoom | None, ascii_only: bool = True) -> str:  # noqa: FBT001, FBT002 (Escalator's text_of callable)
    """A call's page text for a channel.

    ESPA pagers show 7-bit ASCII (`ascii_only`): the room's English name and
    code, never the Chinese name (it would arrive as question marks).
    English rather than pinyin on purpose: `name_en` is kept for every room
    in the registry and matches the English signs; toneless pinyin is
    ambiguous. IM (WeCom, DingTalk) shows Unicode: Chinese first, the English
    line after it for staff who read English."""
    where = f"{room.name_en} ({room.id})" if room else str(alert["room"])
    test = "TEST " if alert.get("test") else ""
    english = f"{test}CALL {where}"
    if ascii_only or room is None:
        return english
    return f"{'【测试】' if alert.get('test') else ''}紧急呼叫：{room.name}（{room.id}）\n{english}"


def link_watcher(alerts: AlertService) -> LinkChange:
    """A channel (or one of its destinations) going down raises its own
    paging_link alert, subject `espa` or `im:desk`; back up clears it."""
    loop = asyncio.get_running_loop()

    def on_link(subject: str, up: bool, detail: str) -> None:  # noqa: FBT001 (a channel's worker thread calls it)
        coro = alerts.channel_up(subject) if up else alerts.channel_down(subject, detail)
        asyncio.run_coroutine_threadsafe(coro, loop)

    return on_link


def page_recorder(alerts: AlertService) -> Callable[[int, str, str, bool, str], None]:
    """Each page's outcome into the alert's timeline (callable from any thread)."""
    loop = asyncio.get_running_loop()

    def record(alert_id: int, channel: str, target: str, ok: bool, detail: str) -> None:  # noqa: FBT001 (a Callable's positional signature)
        asyncio.run_coroutine_threadsafe(
            alerts.note_paged(alert_id, channel, target, ok=ok, detail=detail), loop
        )

    return record


def _log_failure(done: concurrent.futures.Future[bool]) -> None:
    """A gone phone that could not be forgotten is tried again at the next
    page (and forgotten then): logged, not raised into a worker thread."""
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.warning("gone push subscription not deleted", error=str(exc))


def channel_wiring(alerts: AlertService, push_db: PushDb, push_link: str) -> Wiring:
    """What the paging channels need of this server: link state into alerts,
    and for Web Push the staff phones' subscriptions in its database (read
    and deleted from the channel's worker threads)."""
    loop = asyncio.get_running_loop()

    def subscriptions(target: str) -> list[dict[str, Any]]:
        now_ms = int(time.time() * 1000)
        subs = asyncio.run_coroutine_threadsafe(push_db.of_kind("staff", now_ms), loop).result(
            timeout=PUSH_DB_TIMEOUT_S
        )
        return [s for s in subs if target == STAFF or s["who"] == target]

    def gone(endpoint: str) -> None:
        done = asyncio.run_coroutine_threadsafe(push_db.delete(endpoint), loop)
        done.add_done_callback(_log_failure)

    return Wiring(
        on_link_change=link_watcher(alerts),
        push_subscriptions=subscriptions,
        push_gone=gone,
        push_link=push_link,
    )
