"""Escalation: page tier after tier until someone acknowledges the call.

Each open call has a level (how many tiers have started) and a time for its
next page, both in the database, so a server restart mid-escalation carries
on where it was. The clock is injected: tests drive it exactly.

Example (`escalation.tiers`): tier 1 at 0 s, the staff on duty for the
building, every 30 s; tier 2 at 60 s, all staff and the security desk;
tier 3 at 180 s, the facility manager. Every tier that has started is paged
again at its own `repeat_s` until the call is acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from mamaroom.clock import wall_ms
from mamaroom.config import EscalationSettings, EscalationTier, PagingSettings
from mamaroom.contract import RegistryRoom
from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from server.alerts_db import AlertsDb
from server.services.rooms import is_open

log = get_logger(__name__)


def paging_gaps(escalation: EscalationSettings, paging: PagingSettings) -> list[str]:
    """Why a call could reach nobody with this configuration (one line each);
    empty when at least one tier has a target a configured channel can reach.
    The server warns at start-up: silence must never look like calm."""
    gaps: list[str] = []
    espa = bool(paging.espa.port)
    reachable = False
    for i, tier in enumerate(escalation.tiers, start=1):
        unknown = [name for name in tier.im if name not in paging.im.destinations]
        if unknown:
            gaps.append(f"escalation tier {i}: IM destination(s) {', '.join(unknown)} "
                        "are not in paging.im.destinations")
        if tier.pagers and not espa:
            gaps.append(f"escalation tier {i} has pager numbers but paging.espa.port is empty")
        if tier.on_duty and not escalation.roster:
            gaps.append(f"escalation tier {i} pages the duty roster, which is empty")
        if tier.on_duty and escalation.roster and not espa:
            gaps.append(f"escalation tier {i} pages the duty roster over ESPA, "
                        "but paging.espa.port is empty")
        if (espa and (tier.pagers or (tier.on_duty and escalation.roster))) \
                or any(name in paging.im.destinations for name in tier.im):
            reachable = True
    if not reachable:
        gaps.insert(0, "no escalation tier can page anyone: emergency calls reach only the "
                       "staff console and stream (set escalation.tiers, escalation.roster, "
                       "paging.espa.port or paging.im.destinations)")
    return gaps


class PageChannel(Protocol):
    """A paging channel. `send` queues the page and returns at once; `done`
    is called later (from any thread) with the outcome."""

    name: str

    def send(self, target: str, text: str,
             done: Callable[[bool, str], None] | None = None) -> None: ...


Paged = Callable[[int, str, str, bool, str], None]


class Escalator:
    def __init__(self, db: AlertsDb, settings: EscalationSettings, tz: ZoneInfo,
                 room_of: Callable[[str], RegistryRoom | None],
                 text_of: Callable[[dict[str, Any], RegistryRoom | None], str],
                 *, clock: Callable[[], int] = wall_ms, on_paged: Paged | None = None) -> None:
        self._db = db
        self._settings = settings
        self._tz = tz
        self._room_of = room_of
        self._text_of = text_of
        self._clock = clock
        self._on_paged = on_paged
        self.channels: list[PageChannel] = []
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A new call: page now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StorageError as exc:
                log.error("escalation check failed; will retry", error=str(exc))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._settings.tick_s)
            except TimeoutError:
                pass

    def _applies(self, tier: EscalationTier, room: RegistryRoom | None) -> bool:
        return not tier.buildings or (room is not None and (
            room.building in tier.buildings or room.building_en in tier.buildings))

    def targets(self, tier: EscalationTier, room: RegistryRoom | None,
                now_ms: int) -> list[tuple[str, str]]:
        """(channel, target) pairs: ESPA pager numbers and IM destinations."""
        return ([("espa", p) for p in self.pagers(tier, room, now_ms)]
                + [("im", name) for name in tier.im])

    def pagers(self, tier: EscalationTier, room: RegistryRoom | None, now_ms: int) -> list[str]:
        pagers = list(tier.pagers)
        if tier.on_duty:
            local = datetime.fromtimestamp(now_ms / 1000, self._tz)
            for shift in self._settings.roster:
                covers = not shift.buildings or (room is not None and (
                    room.building in shift.buildings or room.building_en in shift.buildings))
                if covers and is_open(shift.hours, local):
                    pagers.append(shift.pager)
        return list(dict.fromkeys(pagers))  # each pager once

    async def tick(self) -> None:
        now = self._clock()
        for alert in await self._db.query(kind="call", status="open"):
            await self._escalate(alert, now)

    async def _escalate(self, alert: dict[str, Any], now: int) -> None:
        room = self._room_of(alert["room"]) if alert["room"] else None
        tiers = [t for t in self._settings.tiers if self._applies(t, room)]
        if alert["test"]:
            # Commissioning: only the tester is paged, once, and it says TEST.
            tester = await self._db.test_mode(alert["room"], now) if alert["room"] else None
            if alert["escalation_level"] == 0:
                if tester:
                    self._page(alert["id"], "espa", tester, self._text_of(alert, room))
                await self._db.set_escalation(alert["id"], 1, None, now, "test: tester only")
            return
        elapsed_s = (now - alert["raised_at_ms"]) / 1000
        started = [t for t in tiers if t.after_s <= elapsed_s]
        level = len(started)
        previous = alert["escalation_level"]
        due_repeat = alert["next_page_ms"] is not None and now >= alert["next_page_ms"]
        if level == previous and not due_repeat:
            return
        text = self._text_of(alert, room)
        # New tiers are paged now; on a repeat, every started tier that repeats.
        to_page = started[previous:] if level > previous and not due_repeat else [
            t for i, t in enumerate(started) if i >= previous or t.repeat_s > 0]
        for tier in to_page:
            for channel, target in self.targets(tier, room, now):
                self._page(alert["id"], channel, target, text)
        next_times = [alert["raised_at_ms"] + int(t.after_s * 1000) for t in tiers
                      if t.after_s > elapsed_s]  # the next tier's start
        next_times += [now + int(t.repeat_s * 1000) for t in started if t.repeat_s > 0]
        await self._db.set_escalation(
            alert["id"], level, min(next_times) if next_times else None, now,
            f"tier {level} of {len(tiers)}")
        if level > previous:
            log.warning("call escalated", alert=alert["id"], room=alert["room"], tier=level)

    def _page(self, alert_id: int, channel_name: str, target: str, text: str) -> None:
        channel = next((c for c in self.channels if c.name == channel_name), None)
        if channel is None:
            log.warning("page not sent: channel not configured", alert=alert_id,
                        channel=channel_name, target=target)
            return

        def done(ok: bool, detail: str) -> None:
            if self._on_paged:
                self._on_paged(alert_id, channel_name, target, ok, detail)

        channel.send(target, text, done)
