"""Escalation: page tier after tier until someone acknowledges the call.

Each open call has a level (how many tiers have started) and a time for its
next page. The schedule runs on the monotonic clock, in memory, so a step
of the wall clock (NTP, a wrong RTC) neither stops nor bunches pages, and a
database that refuses writes (a full disk) does not stop paging. The level
and next page time are also written to the database, best effort, so a
server restart mid-escalation carries on where it was. Both clocks are
injected: tests drive them exactly.

Every page's outcome is recorded on its alert. A tier that starts with
nobody it can page is recorded too ("nobody to page", red on the console):
silence must never look like calm. A `paging_link` alert (a channel or an IM
destination down) is itself paged, once, to the first tier's targets over
the channels that still work.

Example (`escalation.tiers`): tier 1 at 0 s, the staff on duty for the
building, every 30 s; tier 2 at 60 s, all staff and the security desk;
tier 3 at 180 s, the facility manager. Every tier that has started is paged
again at its own `repeat_s` until the call is acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from mamaroom.clock import wall_ms
from mamaroom.config import EscalationSettings, EscalationTier, Settings
from mamaroom.contract import RegistryRoom
from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from paging.channel import Channel
from paging.registry import build_channels
from server.alerts_db import AlertsDb
from server.services.alert_model import Alert
from server.services.rooms import is_open

log = get_logger(__name__)


#: What to set when a channel kind a tier names is not configured.
HOW_TO_CONFIGURE = {
    "espa": "paging.espa.port is empty",
    "im": "paging.im.destinations is empty",
    "push": "pages.vapid_public_key and pages.vapid_private_key are not set",
}


def pages_push(escalation: EscalationSettings) -> bool:
    """Does a tier page Web Push (`push:` targets)?"""
    return any(name == "push" for t in escalation.tiers for name, _ in t.named_targets())


def paging_gaps(escalation: EscalationSettings, channels: Mapping[str, Channel]) -> list[str]:
    """Why a call could reach nobody with these channels (one line each);
    empty when every tier's targets are reachable. The first line is NOBODY
    when no tier can page anyone. The server says these at start-up: silence
    must never look like calm."""
    gaps: list[str] = []
    reachable = False
    only_push = True  # of the channels that reach someone
    for i, tier in enumerate(escalation.tiers, start=1):
        by_channel: dict[str, list[str]] = {}
        for name, target in tier.named_targets():
            by_channel.setdefault(name, []).append(target)
        for name, targets in by_channel.items():
            channel = channels.get(name)
            if channel is None:
                how = HOW_TO_CONFIGURE.get(name, f"no channel named {name!r} is configured")
                gaps.append(f"escalation tier {i} pages {name} {', '.join(targets)}, but {how}")
                continue
            unknown = [t for t in targets if not channel.reaches(t)]
            if unknown:
                gaps.append(
                    f"escalation tier {i}: {name} cannot reach {', '.join(unknown)}"
                    + (" (not in paging.im.destinations)" if name == "im" else "")
                )
            if len(unknown) < len(targets):
                reachable = True
                only_push &= name == "push"
        if tier.on_duty and not escalation.roster:
            gaps.append(f"escalation tier {i} pages the duty roster, which is empty")
        if tier.on_duty and escalation.roster:
            if "espa" in channels:
                reachable = True
                only_push = False
            else:
                gaps.append(
                    f"escalation tier {i} pages the duty roster over ESPA, "
                    "but paging.espa.port is empty"
                )
    if not reachable:
        gaps.insert(0, NOBODY)
    elif only_push:
        gaps.append(ONLY_PUSH)
    return gaps


NOBODY = (
    "no escalation tier can page anyone: emergency calls reach only the staff console "
    "and stream (set escalation.tiers, escalation.roster, paging.espa.port or "
    "paging.im.destinations)"
)


ONLY_PUSH = (
    "escalation tiers page only Web Push: a call reaches only staff phones that "
    "subscribed and are on; add a pager (paging.espa) or an IM destination"
)


def refuse_unpaged(settings: Settings) -> str | None:
    """Why the server must not start (nobody could be paged), or None.
    `paging.allow_no_target` starts it anyway (the demo)."""
    gaps = paging_gaps(settings.escalation, build_channels(settings))
    if gaps and gaps[0] == NOBODY and not settings.paging.allow_no_target:
        return (
            f"config error: {NOBODY}; to run without paging on purpose (a demo), "
            "set paging.allow_no_target = true (env MAMAROOM_PAGING__ALLOW_NO_TARGET=true)"
        )
    return None


Paged = Callable[[int, str, str, bool, str], None]
OpenCalls = Callable[[], Awaitable[list[Alert]]]
Nobody = Callable[[int, str], Awaitable[None]]
SetEscalation = Callable[[int, int, int | None, str], Awaitable[None]]
Lease = Callable[[int, int], Awaitable[bool]]
#: Several servers share one database: one of them escalates, holding a lease
#: it renews every tick; if it dies, another takes over within this long.
LEASE_TTL_MS = 10_000


@dataclass
class _Schedule:
    """One alert's escalation, on the monotonic clock (seconds)."""

    raised: float
    level: int
    next_page: float | None


class Escalator:
    def __init__(
        self,
        db: AlertsDb,
        settings: EscalationSettings,
        tz: ZoneInfo,
        room_of: Callable[[str], RegistryRoom | None],
        text_of: Callable[[Alert, RegistryRoom | None, bool], str],
        *,
        clock: Callable[[], int] = wall_ms,
        monotonic: Callable[[], float] = time.monotonic,
        on_paged: Paged | None = None,
        open_calls: OpenCalls | None = None,
        on_nobody: Nobody | None = None,
        set_escalation: SetEscalation | None = None,
        lease: Lease | None = None,
    ) -> None:
        """`clock` (wall ms) is only for shift hours and what is stored;
        `monotonic` (seconds) times every page. `open_calls`, `on_nobody` and
        `set_escalation` default to the database alone (the alert service
        passes its own, which also know the calls held in the journal)."""
        self._db = db
        self._settings = settings
        self._tz = tz
        self._room_of = room_of
        self._text_of = text_of
        self._clock = clock
        self._mono = monotonic
        self._on_paged = on_paged
        self._open_calls = open_calls or (lambda: db.query(kind="call", status="open"))
        self._on_nobody = on_nobody
        self._set_escalation = set_escalation
        self._lease = lease
        self.leader: bool | None = None
        #: The paging channels by name (`add_channel`).
        self.channels: dict[str, Channel] = {}
        self._wake = asyncio.Event()
        self._schedules: dict[int, _Schedule] = {}
        #: The last open calls read, paged from if the database cannot be read.
        self._last_calls: list[Alert] = []
        #: paging_link alerts already paged over the other channels.
        self._link_alerts_paged: set[int] = set()

    def add_channel(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    def wake(self) -> None:
        """A new call: page now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # paging must outlive any one bad round
                log.exception("escalation round failed; will retry")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._settings.tick_s)
            except TimeoutError:
                pass

    def _applies(self, tier: EscalationTier, room: RegistryRoom | None) -> bool:
        return not tier.buildings or (
            room is not None
            and (room.building in tier.buildings or room.building_en in tier.buildings)
        )

    def targets(
        self, tier: EscalationTier, room: RegistryRoom | None, now_ms: int
    ) -> list[tuple[str, str]]:
        """(channel, target) pairs: the tier's own, then whoever is on duty."""
        pairs = tier.named_targets()
        pairs += [("espa", p) for p in self.on_duty(tier, room, now_ms)]
        return list(dict.fromkeys(pairs))

    def on_duty(self, tier: EscalationTier, room: RegistryRoom | None, now_ms: int) -> list[str]:
        """Pager numbers of the roster's staff on shift for the room (if the tier pages them)."""
        pagers: list[str] = []
        if tier.on_duty:
            local = datetime.fromtimestamp(now_ms / 1000, self._tz)
            for shift in self._settings.roster:
                covers = not shift.buildings or (
                    room is not None
                    and (room.building in shift.buildings or room.building_en in shift.buildings)
                )
                if covers and is_open(shift.hours, local):
                    pagers.append(shift.pager)
        return list(dict.fromkeys(pagers))  # each pager once

    async def _is_leader(self) -> bool:
        if self._lease is None:
            return True
        try:
            leader = await asyncio.wait_for(self._lease(self._clock(), LEASE_TTL_MS), 2.0)
        except (StorageError, TimeoutError):
            leader = True  # cannot tell: paging twice beats paging nobody
        if leader != self.leader:
            log.info(
                "escalating the shared calls"
                if leader
                else "another server escalates the shared calls"
            )
            self.leader = leader
        return leader

    async def tick(self) -> None:
        try:
            calls = await self._open_calls()
            self._last_calls = calls
        except StorageError as exc:
            # Reads failing too: keep paging the calls we know of.
            log.error("open calls unreadable; paging the last known ones", error=str(exc))
            calls = self._last_calls
        leader = await self._is_leader()
        if not leader:  # only the calls journalled here (negative ids) are ours alone
            calls = [c for c in calls if c["id"] < 0]
        seen = set()
        for alert in calls:
            seen.add(alert["id"])
            try:
                await self._escalate(alert)
            except StorageError as exc:
                log.error(
                    "escalation state not stored; paging goes on", alert=alert["id"], error=str(exc)
                )
        for gone in set(self._schedules) - seen:  # acknowledged, closed, or not ours
            del self._schedules[gone]
        if leader:
            await self._page_link_alerts()

    def _schedule(self, alert: Alert) -> _Schedule:
        """The alert's schedule; for one first seen now, taken from what was stored."""
        sched = self._schedules.get(alert["id"])
        if sched is None:
            now_mono, now_wall = self._mono(), self._clock()
            # Wall time only for what happened before this process saw the
            # alert, and never negative (a clock stepped back since).
            age = max(0.0, (now_wall - alert["raised_at_ms"]) / 1000)
            next_page = None
            if alert["next_page_ms"] is not None:
                next_page = now_mono + max(0.0, (alert["next_page_ms"] - now_wall) / 1000)
            sched = _Schedule(
                raised=now_mono - age, level=alert["escalation_level"], next_page=next_page
            )
            self._schedules[alert["id"]] = sched
        return sched

    async def _escalate(self, alert: Alert) -> None:
        room = self._room_of(alert["room"]) if alert["room"] else None
        tiers = [t for t in self._settings.tiers if self._applies(t, room)]
        sched = self._schedule(alert)
        now_wall = self._clock()
        if alert["test"]:
            # Commissioning: only the tester is paged, once, and it says TEST.
            if sched.level == 0:
                sched.level = 1
                tester = (
                    await self._db.test_mode(alert["room"], now_wall) if alert["room"] else None
                )
                if tester:
                    self._page(alert["id"], "espa", tester, self._text_of(alert, room, True))  # noqa: FBT003 (text_of is a positional Callable)
                else:
                    await self._nobody(alert["id"], "test call: the room's tester has no pager")
                await self._store(alert["id"], 1, None, "test: tester only")
            return
        now = self._mono()
        elapsed_s = now - sched.raised
        started = [t for t in tiers if t.after_s <= elapsed_s]
        level = len(started)
        previous = sched.level
        due_repeat = sched.next_page is not None and now >= sched.next_page
        if level == previous and not due_repeat:
            return
        # New tiers are paged now; on a repeat, every started tier that repeats.
        to_page = (
            started[previous:]
            if level > previous and not due_repeat
            else [t for i, t in enumerate(started) if i >= previous or t.repeat_s > 0]
        )
        sent = 0
        for tier in to_page:
            for channel, target in self.targets(tier, room, now_wall):
                sent += self._page(
                    alert["id"], channel, target, self._text_of(alert, room, self._ascii(channel))
                )
        if to_page and not sent:
            await self._nobody(
                alert["id"],
                f"tier {level} of {len(tiers)}: no target that a configured channel can reach",
            )
        next_times = [
            sched.raised + t.after_s for t in tiers if t.after_s > elapsed_s
        ]  # the next tier's start
        next_times += [now + t.repeat_s for t in started if t.repeat_s > 0]
        sched.level = level
        sched.next_page = min(next_times) if next_times else None
        if level > previous:
            log.warning("call escalated", alert=alert["id"], room=alert["room"], tier=level)
        next_ms = (
            None if sched.next_page is None else now_wall + int((sched.next_page - now) * 1000)
        )
        await self._store(alert["id"], level, next_ms, f"tier {level} of {len(tiers)}")

    async def _store(self, alert_id: int, level: int, next_ms: int | None, detail: str) -> None:
        if self._set_escalation is not None:
            await self._set_escalation(alert_id, level, next_ms, detail)
        else:
            await self._db.set_escalation(alert_id, level, next_ms, self._clock(), detail)

    async def _nobody(self, alert_id: int, detail: str) -> None:
        if self._on_nobody is not None:
            await self._on_nobody(alert_id, detail)
        else:
            log.error("nobody to page", alert=alert_id, detail=detail)
            await self._db.note_nobody(alert_id, at_ms=self._clock(), detail=detail)

    async def _page_link_alerts(self) -> None:
        """A paging channel down is an emergency of the call path: tell the
        first tier's targets, once, over every other channel that can reach them."""
        try:
            alerts = await self._db.query(kind="paging_link", open_only=True)
        except StorageError:
            return
        self._link_alerts_paged &= {a["id"] for a in alerts}
        first = [t for t in self._settings.tiers if t.after_s == 0] or self._settings.tiers[:1]
        for alert in alerts:
            if alert["id"] in self._link_alerts_paged:
                continue
            self._link_alerts_paged.add(alert["id"])
            down = (alert["subject"] or "").split(":", 1)
            english = f"PAGING FAULT {alert['subject']}: calls may not reach pagers"
            sent = 0
            for tier in first:
                for channel, target in self.targets(tier, None, self._clock()):
                    if channel == down[0] and (len(down) == 1 or down[1] == target):
                        continue  # not over the link that is down
                    text = (
                        english
                        if self._ascii(channel)
                        else (f"寻呼故障：{alert['subject']}，呼叫可能无法送达寻呼机\n{english}")
                    )
                    sent += self._page(alert["id"], channel, target, text)
            if not sent:
                log.error(
                    "paging link down and no other channel to tell anyone", subject=alert["subject"]
                )

    def _ascii(self, channel_name: str) -> bool:
        channel = self.channels.get(channel_name)
        return channel is None or channel.ascii_only

    def _page(self, alert_id: int, channel_name: str, target: str, text: str) -> bool:
        """Queue one page; False if no configured channel can send it."""
        channel = self.channels.get(channel_name)
        if channel is None:
            log.warning(
                "page not sent: channel not configured",
                alert=alert_id,
                channel=channel_name,
                target=target,
            )
            return False

        def done(ok: bool, detail: str) -> None:  # noqa: FBT001 (paging.channel.Done's (ok, detail))
            if self._on_paged:
                self._on_paged(alert_id, channel_name, target, ok, detail)

        channel.send(target, text, done)
        return True
