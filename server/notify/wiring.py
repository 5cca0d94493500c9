"""Connects the configured paging channels to the alert service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mamaroom.config import EspaSettingsModel
from mamaroom.contract import RegistryRoom
from paging.espa import EspaLink, EspaSettings
from server.services.alerts import AlertService


def call_text(alert: dict[str, Any], room: RegistryRoom | None, channel: str = "espa") -> str:
    """A call's page text for one channel.

    ESPA pagers show 7-bit ASCII: the room's English name and code, never the
    Chinese name (it would arrive as question marks). English rather than
    pinyin on purpose: `name_en` is kept for every room in the registry and
    matches the English signs; toneless pinyin is ambiguous. IM (WeCom,
    DingTalk) shows Unicode: Chinese first, the English line after it for
    staff who read English."""
    where = f"{room.name_en} ({room.id})" if room else str(alert["room"])
    test = "TEST " if alert.get("test") else ""
    english = f"{test}CALL {where}"
    if channel == "espa" or room is None:
        return english
    return f"{'【测试】' if alert.get('test') else ''}紧急呼叫：{room.name}（{room.id}）\n{english}"


def start_espa(cfg: EspaSettingsModel, alerts: AlertService) -> EspaLink | None:
    """The ESPA link, if configured; its going down or up raises or clears a
    `paging_link` alert."""
    if not cfg.port:
        return None
    link = EspaLink(EspaSettings(
        port=cfg.port, baud=cfg.baud, bytesize=cfg.bytesize, parity=cfg.parity,
        stopbits=cfg.stopbits, own_address=cfg.own_address,
        pager_system_address=cfg.pager_system_address, timeout_s=cfg.timeout_s,
        tries=cfg.tries, mode=cfg.mode, poll_silence_s=cfg.poll_silence_s),
        on_link_change=link_watcher(alerts, "espa"))
    link.start()
    return link


def link_watcher(alerts: AlertService, channel: str) -> Callable[[bool, str], None]:
    """A channel going down raises its own paging_link alert; back up clears it."""
    loop = asyncio.get_running_loop()

    def on_link(up: bool, detail: str) -> None:  # the channel's worker thread
        coro = alerts.channel_up(channel) if up else alerts.channel_down(channel, detail)
        asyncio.run_coroutine_threadsafe(coro, loop)

    return on_link


def destination_watcher(alerts: AlertService,
                        channel: str) -> Callable[[str, bool, str], None]:
    """As link_watcher, one paging_link alert per destination (`im:desk`)."""
    loop = asyncio.get_running_loop()

    def on_link(target: str, up: bool, detail: str) -> None:  # a worker thread
        subject = f"{channel}:{target}"
        coro = alerts.channel_up(subject) if up else alerts.channel_down(subject, detail)
        asyncio.run_coroutine_threadsafe(coro, loop)

    return on_link


def page_recorder(alerts: AlertService) -> Callable[[int, str, str, bool, str], None]:
    """Each page's outcome into the alert's timeline (callable from any thread)."""
    loop = asyncio.get_running_loop()

    def record(alert_id: int, channel: str, target: str, ok: bool, detail: str) -> None:
        asyncio.run_coroutine_threadsafe(
            alerts.note_paged(alert_id, channel, target, ok, detail), loop)

    return record
