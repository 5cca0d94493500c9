"""Connects the configured paging channels to the alert service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mamaroom.config import EspaSettingsModel
from mamaroom.contract import RegistryRoom
from server.notify.espa import EspaLink, EspaSettings
from server.services.alerts import AlertService


def call_text(alert: dict[str, Any], room: RegistryRoom | None) -> str:
    """7-bit page text: the English name and code, never the Chinese name."""
    where = f"{room.name_en} ({room.id})" if room else str(alert["room"])
    test = "TEST " if alert.get("test") else ""
    return f"{test}CALL {where}"


def start_espa(cfg: EspaSettingsModel, alerts: AlertService,
               room_of: Callable[[str], RegistryRoom | None]) -> EspaLink | None:
    if not cfg.port:
        return None
    loop = asyncio.get_running_loop()

    def on_link(up: bool, detail: str) -> None:  # the link's worker thread
        coro = alerts.channel_up("espa") if up else alerts.channel_down("espa", detail)
        asyncio.run_coroutine_threadsafe(coro, loop)

    link = EspaLink(EspaSettings(
        port=cfg.port, baud=cfg.baud, bytesize=cfg.bytesize, parity=cfg.parity,
        stopbits=cfg.stopbits, own_address=cfg.own_address,
        pager_system_address=cfg.pager_system_address, timeout_s=cfg.timeout_s,
        tries=cfg.tries), on_link_change=on_link)
    link.start()

    def page(alert: dict[str, Any]) -> None:
        text = call_text(alert, room_of(alert["room"]) if alert["room"] else None)
        for pager in cfg.pagers:
            def done(ok: bool, detail: str, pager: str = pager) -> None:
                asyncio.run_coroutine_threadsafe(
                    alerts.note_paged(alert["id"], "espa", pager, ok, detail), loop)
            link.send(pager, text, done)

    alerts.add_pager(page)
    return link
