"""Connects the paging channels to the alert service: page texts, link
state into `paging_link` alerts, page outcomes into the alert's timeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mamaroom.contract import RegistryRoom
from paging.channel import LinkChange
from server.services.alert_model import Alert
from server.services.alerts import AlertService


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
