"""Emergency calls as alerts: raised on the first `press` of a call_id,
committed before the node hears `received`, moved forwards by staff (console
ack, staff key `presence`, `reset` or console resolve), every step in the
timeline.

A call is never lost and never waits on the database. If the database
refuses the commit (a full disk, a broken file), the call is written to the
call journal (server/services/call_journal.py: pre-allocated, so a full disk
cannot stop it) and from then on lives in memory as a *provisional* alert,
with a negative id: the node is told `received`, staff see it, escalation
pages it, staff can acknowledge and resolve it. `run()` commits it, with
everything that happened to it, as soon as the database takes writes again,
and the consoles swap the provisional card for the committed one. Only if
the journal fails too is the node told nothing: it re-sends its press every
3 s, and the call is still shown and paged meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from mamaroom.clock import wall_ms
from mamaroom.contract import Call, CallAck, CallStatus
from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from server.alerts_db import AlertsDb
from server.errors import NotFound
from server.services.alert_model import (
    CLOSED,
    ORDER,
    Alert,
    AlertKind,
    AlertStatus,
    Priority,
    with_enums,
)
from server.services.call_journal import CallJournal, JournalFull

log = get_logger(__name__)

#: What the node's lamp shows for each alert status.
NODE_STATUS = {
    "open": CallStatus.RECEIVED,
    "acknowledged": CallStatus.ACKNOWLEDGED,
    "arrived": CallStatus.ARRIVED,
    "resolved": CallStatus.RESOLVED,
    "cancelled": CallStatus.RESOLVED,
}


def present(alert: Alert) -> dict[str, Any]:
    """An alert as the API and the staff stream show it (AlertOut): the
    contract's ISO 8601 times (`raised_at`, ...) beside the stored `*_at_ms`
    integers, and the response times in seconds (raised → acknowledged,
    arrived, resolved)."""
    out: dict[str, Any] = dict(alert)
    raised = alert["raised_at_ms"]
    steps = {
        "acknowledged": alert["acknowledged_at_ms"],
        "arrived": alert["arrived_at_ms"],
        "resolved": alert["resolved_at_ms"],
    }
    out["raised_at"] = _iso(raised)
    for step, at_ms in steps.items():
        out[f"{step}_at"] = _iso(at_ms)
    out["response_s"] = {
        step: (at_ms - raised) / 1000 if at_ms else None for step, at_ms in steps.items()
    }
    if "timeline" in alert:
        out["timeline"] = [{**e, "at": _iso(e["at_ms"])} for e in alert["timeline"]]
    return out


def _iso(ms: int | None) -> str | None:
    return (
        None
        if ms is None
        else datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


SendAck = Callable[[str, CallAck], Awaitable[None]]
Listener = Callable[[Alert], None]
#: How often provisional alerts are offered to the database again.
COMMIT_RETRY_S = 2.0
#: A call the database has not committed in this long goes to the journal:
#: a locked or stalled database (SQLite waits up to 10 s for a lock) must
#: not hold the node's `received` or the first page.
COMMIT_DEADLINE_S = 2.0


class AlertService:
    def __init__(
        self,
        db: AlertsDb,
        *,
        clock: Callable[[], int] = wall_ms,
        journal: CallJournal | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._journal = journal
        self._send: SendAck | None = None
        self._listeners: list[Listener] = []
        #: Tells the other servers of each change made here (ServerMqtt).
        self._peers: Listener | None = None
        #: Open call alerts by id → room.
        self._open: dict[int, str] = {}
        #: Calls the database refused, by their (negative) provisional id.
        self._provisional: dict[int, Alert] = {}
        self._committing = asyncio.Lock()
        #: The open calls last read from the database (see calls_to_page).
        self._stored_calls: list[Alert] = []

    def connect(self, send: SendAck) -> None:
        self._send = send

    def connect_peers(self, tell: Listener) -> None:
        self._peers = tell

    def from_peer(self, alert: Alert) -> None:
        """A change made by another server sharing this database: shown on
        this server's consoles too (its open calls stay public `occupied`).
        Provisional alerts stay with the server that journalled them: their
        ids are its own."""
        if alert.get("id", 0) > 0:
            self._changed(alert, local=False)

    async def channel_down(self, subject: str, detail: str) -> None:
        """A paging channel (`espa`) or one IM destination (`im:desk`) is down:
        its own `paging_link` alert (one while open), which escalation pages
        over the channels that still work."""
        channel = subject.split(":", 1)[0]
        try:
            alert, created = await self._db.raise_once(
                AlertKind.PAGING_LINK,
                subject,
                priority=Priority.HIGH,
                at_ms=self._clock(),
                detail=f"{subject}: {detail}",
                channel=channel,
            )
        except StorageError as exc:
            log.error(
                "paging link down, and its alert could not be stored",
                subject=subject,
                detail=detail,
                error=str(exc),
            )
            return
        if created:
            log.error("paging link down", subject=subject, detail=detail, alert=alert["id"])
            self._changed(alert)

    async def channel_up(self, subject: str) -> None:
        log.info("paging link up", subject=subject)
        await self.clear(AlertKind.PAGING_LINK, {subject}, who=subject.split(":", 1)[0])

    async def raise_once(
        self,
        kind: AlertKind,
        subject: str,
        *,
        priority: Priority,
        detail: str,
        room: str | None = None,
        device: str | None = None,
    ) -> None:
        """A system alert (device_offline, paging_link...) unless one is open for `subject`."""
        alert, created = await self._db.raise_once(
            kind,
            subject,
            priority=priority,
            at_ms=self._clock(),
            detail=detail,
            channel="mamaroom",
            room=room,
            device=device,
        )
        if created:
            log.warning(kind.replace("_", " "), subject=subject, detail=detail, alert=alert["id"])
            self._changed(alert)

    async def clear(self, kind: AlertKind, subjects: set[str], *, who: str = "mamaroom") -> None:
        """Resolve the open alerts of `kind` about these subjects (the cause is gone)."""
        for alert in await self._db.query(kind=kind, open_only=True):
            if alert["subject"] in subjects:
                await self._advance(alert["id"], AlertStatus.RESOLVED, who=who, channel="mamaroom")

    async def open_subjects(self, kind: AlertKind) -> set[str]:
        return {
            a["subject"]
            for a in await self._db.query(kind=kind, open_only=True)
            if a["subject"] is not None
        }

    async def note_paged(
        self, alert_id: int, channel: str, target: str, *, ok: bool, detail: str
    ) -> None:
        """A page's outcome on the alert: the console says what really happened."""
        now = self._clock()
        if alert_id < 0 and alert_id not in self._provisional:
            # A journalled call committed meanwhile: its outcome came too late
            # for the journal; the committed alert is paged on from here.
            log.info(
                "page outcome of a call committed meanwhile",
                provisional=alert_id,
                target=target,
                ok=ok,
            )
            return
        if (p := self._provisional.get(alert_id)) is not None:
            p["timeline"].append(
                {
                    "at_ms": now,
                    "what": "paged" if ok else "page failed",
                    "who": target,
                    "channel": channel,
                    "detail": detail,
                }
            )
            p["paging"][target] = {"channel": channel, "ok": ok, "at_ms": now}
            self._changed(p)
            return
        try:
            await self._db.note_paged(
                alert_id, channel=channel, target=target, ok=ok, at_ms=now, detail=detail
            )
            alert = await self._db.get(alert_id)
        except StorageError as exc:
            log.error(
                "page outcome not stored", alert=alert_id, target=target, ok=ok, error=str(exc)
            )
            return
        if alert is not None:
            alert.pop("timeline", None)
            self._changed(alert)

    async def note_nobody(self, alert_id: int, detail: str) -> None:
        """Escalation found nobody to page: shown in red on the console."""
        now = self._clock()
        log.error("NOBODY PAGED for an alert", alert=alert_id, detail=detail)
        if (p := self._provisional.get(alert_id)) is not None:
            p["timeline"].append(
                {
                    "at_ms": now,
                    "what": "nobody to page",
                    "who": None,
                    "channel": "escalation",
                    "detail": detail,
                }
            )
            p["nobody"] = True
            self._changed(p)
            return
        try:
            await self._db.note_nobody(alert_id, at_ms=now, detail=detail)
            alert = await self._db.get(alert_id)
        except StorageError as exc:
            log.error("'nobody to page' not stored", alert=alert_id, error=str(exc))
            return
        if alert is not None:
            alert.pop("timeline", None)
            self._changed(alert)

    async def set_escalation(
        self, alert_id: int, level: int, next_page_ms: int | None, detail: str
    ) -> None:
        """Escalation's progress, persisted so a restart carries on; best effort."""
        if (p := self._provisional.get(alert_id)) is not None:
            changed = p["escalation_level"] != level
            p["escalation_level"], p["next_page_ms"] = level, next_page_ms
            if changed:
                p["timeline"].append(
                    {
                        "at_ms": self._clock(),
                        "what": "escalated",
                        "who": None,
                        "channel": "escalation",
                        "detail": detail,
                    }
                )
                self._changed(p)
            return
        await self._db.set_escalation(alert_id, level, next_page_ms, self._clock(), detail)

    async def calls_to_page(self) -> list[Alert]:
        """Open (not yet acknowledged) calls, provisional ones included. A
        database that cannot be read in time gives the last list read: paging
        goes on for the calls known."""
        provisional = [p.copy() for p in self._provisional.values() if p["status"] == "open"]
        try:
            self._stored_calls = await asyncio.wait_for(
                self._db.query(kind="call", status="open"), COMMIT_DEADLINE_S
            )
        except (StorageError, TimeoutError) as exc:
            log.error(
                "open calls unreadable; paging the last known ones", error=str(exc) or "timed out"
            )
        return [*self._stored_calls, *provisional]

    def provisional_count(self) -> int:
        return len(self._provisional)

    async def probe_write(self) -> None:
        """A real write to the alerts database (raises StorageError)."""
        await self._db.probe_write()

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def open_rooms(self) -> set[str]:
        """Rooms with an open call: shown as `occupied` to the public, never as a call."""
        return set(self._open.values())

    async def load(self) -> None:
        """Open calls from the database, and calls still in the journal from
        before a restart (provisional until committed)."""
        entries = []
        if self._journal is not None:
            try:
                entries = await asyncio.to_thread(self._journal.open)
            except OSError as exc:  # calls still work; only the full-disk fallback is off
                log.error(
                    "call journal unavailable: a call the database refuses will wait "
                    "for the node's re-send",
                    path=str(self._journal.path),
                    error=str(exc),
                )
                self._journal = None
        if entries:
            for entry in entries:
                alert = _journalled(entry.body)
                alert["id"] = -(entry.slot + 1)
                alert["journal_slot"] = entry.slot
                self._provisional[alert["id"]] = alert
            if self._provisional:
                log.warning(
                    "calls in the journal from before the restart", count=len(self._provisional)
                )
        self._open = {
            a["id"]: a["room"]
            for a in await self._db.query(open_only=True, kind="call")
            if a["room"]
        }
        self._open |= {
            a["id"]: a["room"]
            for a in self._provisional.values()
            if a["room"] and a["status"] not in CLOSED
        }
        await self.commit_provisional()

    async def run(self) -> None:
        """Commits provisional calls once the database takes writes again."""
        while True:
            await asyncio.sleep(COMMIT_RETRY_S)
            if self._provisional:
                await self.commit_provisional()

    async def commit_provisional(self) -> None:
        async with self._committing:
            for pid, alert in sorted(self._provisional.items(), reverse=True):
                try:
                    committed, created = await self._db.commit_journaled(alert)
                except StorageError as exc:
                    log.warning(
                        "journalled calls still wait for the database",
                        count=len(self._provisional),
                        error=str(exc),
                    )
                    return
                slot = alert.get("journal_slot")
                if self._journal is not None and slot is not None:
                    try:
                        await asyncio.to_thread(self._journal.clear, slot)
                    except OSError as exc:  # committed is what counts; the slot is retried
                        log.error("journal slot not cleared", slot=slot, error=str(exc))
                del self._provisional[pid]
                log.warning(
                    "journalled call committed",
                    provisional=pid,
                    alert=committed["id"],
                    created=created,
                    room=committed["room"],
                )
                self._changed(
                    {**alert, "superseded_by": committed["id"], "status": AlertStatus.CANCELLED}
                )
                self._changed(committed)

    # --- from the node ----------------------------------------------------------

    async def on_call(self, device: str, room: str, call: Call) -> None:
        now = self._clock()
        provisional = self._provisional_of(device, call.call_id)
        if call.action == "press" and provisional is None:
            provisional = self._provisional_in(room)  # one call per room, as below
        if call.action == "press":
            if provisional is not None:  # a re-send of (or a press joining) a journalled call
                await self._tell(provisional, to=(device, call.call_id))
                return
            try:
                alert, created = await asyncio.wait_for(
                    self._raise(device, room, call.call_id, now), COMMIT_DEADLINE_S
                )
            except (StorageError, TimeoutError) as exc:
                # A late commit of this same attempt is found again by
                # commit_provisional (same device, call_id and raise time).
                await self._journal_call(
                    device, room, call, now, str(exc) or f"no commit in {COMMIT_DEADLINE_S:g} s"
                )
                return
            if created:
                log.warning(
                    "EMERGENCY CALL",
                    room=room,
                    device=device,
                    call_id=call.call_id,
                    alert=alert["id"],
                )
                self._changed(alert)
            elif (alert["device"], alert["call_id"]) != (device, call.call_id):
                log.info(
                    "press joined the room's open call",
                    room=room,
                    device=device,
                    call_id=call.call_id,
                    alert=alert["id"],
                )
            # The node hears the status under its own call_id; escalation
            # pages staff on its next tick (once per room).
            await self._tell(alert, to=(device, call.call_id))
            return
        known = (
            provisional if provisional is not None else await self._db.by_call(device, call.call_id)
        )
        if known is None:
            log.warning(
                "call event for an unknown call",
                device=device,
                call_id=call.call_id,
                action=call.action,
            )
            return
        if call.action == "shown":
            if provisional is not None:
                provisional["timeline"].append(
                    {
                        "at_ms": now,
                        "what": "shown",
                        "who": device,
                        "channel": "lamp",
                        "detail": call.status,
                    }
                )
                return
            await self._db.note(
                known["id"], "shown", at_ms=now, who=device, channel="lamp", detail=call.status
            )
            return
        status = AlertStatus.ARRIVED if call.action == "presence" else AlertStatus.RESOLVED
        await self._advance(known["id"], status, who="staff key", channel="staff key")

    async def _raise(self, device: str, room: str, call_id: str, now: int) -> tuple[Alert, bool]:
        test = await self._db.test_mode(room, now) is not None
        return await self._db.raise_call(
            room=room, device=device, call_id=call_id, at_ms=now, channel="button", test=test
        )

    def _provisional_in(self, room: str) -> Alert | None:
        return next(
            (
                p
                for p in self._provisional.values()
                if p["room"] == room and p["status"] not in ("resolved", "cancelled")
            ),
            None,
        )

    def _provisional_of(self, device: str, call_id: str) -> Alert | None:
        return next(
            (
                p
                for p in self._provisional.values()
                if p["device"] == device and p["call_id"] == call_id
            ),
            None,
        )

    async def _journal_call(self, device: str, room: str, call: Call, now: int, error: str) -> None:
        """The database refused the call: journal it, tell the node, show and page it."""
        alert: Alert = {
            "id": 0,  # set below, from the journal slot
            "kind": AlertKind.CALL,
            "priority": Priority.HIGH,
            "room": room,
            "device": device,
            "call_id": call.call_id,
            "status": AlertStatus.OPEN,
            "raised_at_ms": now,
            "acknowledged_at_ms": None,
            "acknowledged_by": None,
            "arrived_at_ms": None,
            "resolved_at_ms": None,
            "resolved_by": None,
            "escalation_level": 0,
            "next_page_ms": None,
            "test": False,
            "subject": None,
            "paging": {},
            "nobody": False,
            "provisional": True,
            "timeline": [
                {
                    "at_ms": now,
                    "what": "raised",
                    "who": device,
                    "channel": "button",
                    "detail": "database refused the call; kept in the call journal",
                }
            ],
        }
        durable = False
        if self._journal is not None:
            try:
                slot = await asyncio.to_thread(self._journal.write, _journal_body(alert))
            except (OSError, ValueError, JournalFull) as exc:
                log.error("call journal refused the call too", call_id=call.call_id, error=str(exc))
                slot = -1 - len(self._provisional) - 10_000  # in memory only
            else:
                durable = True
        else:
            slot = -1 - len(self._provisional) - 10_000
        alert["journal_slot"] = slot if durable else None
        alert["id"] = -(slot + 1) if durable else slot
        self._provisional[alert["id"]] = alert
        log.error(
            "EMERGENCY CALL kept in the call journal: the database refused it",
            room=room,
            device=device,
            call_id=call.call_id,
            alert=alert["id"],
            journalled=durable,
            error=error,
        )
        self._changed(alert)
        if durable:  # `received` promises a durable record; without one the node re-sends
            await self._tell(alert)

    async def on_device_online(self, device: str) -> None:
        """A node is back: re-send the status of each of its open calls."""
        for alert in await self._db.query(device=device, kind="call", open_only=True):
            await self._tell(alert)

    # --- from staff -------------------------------------------------------------

    async def acknowledge(self, alert_id: int, who: str) -> Alert:
        return await self._advance(alert_id, AlertStatus.ACKNOWLEDGED, who=who, channel="console")

    async def resolve(self, alert_id: int, who: str) -> Alert:
        return await self._advance(alert_id, AlertStatus.RESOLVED, who=who, channel="console")

    async def set_test_mode(
        self, room: str, tester_pager: str | None, minutes: float, who: str
    ) -> None:
        """Commissioning: the room's calls page only `tester_pager`, marked TEST."""
        await self._db.set_test_mode(room, tester_pager, self._clock() + int(minutes * 60_000), who)
        log.info(
            "test mode " + ("on" if tester_pager else "off"), room=room, by=who, tester=tester_pager
        )

    async def tester_of(self, room: str) -> str | None:
        return await self._db.test_mode(room, self._clock())

    async def get(self, alert_id: int) -> Alert:
        if (p := self._provisional.get(alert_id)) is not None:
            return _public(p)
        alert = await self._db.get(alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return alert

    async def query(
        self, *, status: str | None, kind: str | None, open_only: bool = False, limit: int = 500
    ) -> list[Alert]:
        provisional = [
            _public(p, timeline=False)
            for p in self._provisional.values()
            if (status is None or p["status"] == status)
            and (kind is None or kind == "call")
            and (not open_only or p["status"] not in ("resolved", "cancelled"))
        ]
        try:
            stored = await self._db.query(
                status=status, kind=kind, open_only=open_only, limit=limit
            )
        except StorageError:
            if not provisional:
                raise
            stored = []
        return [*provisional, *stored][:limit]

    # --- internals ---------------------------------------------------------------

    async def _advance(
        self, alert_id: int, status: AlertStatus, *, who: str, channel: str
    ) -> Alert:
        if (p := self._provisional.get(alert_id)) is not None:
            return await self._advance_provisional(p, status, who=who, channel=channel)
        try:
            alert, changed = await self._db.advance(
                alert_id, status, at_ms=self._clock(), who=who, channel=channel
            )
        except KeyError:
            raise NotFound(f"no alert {alert_id}") from None
        if changed:
            log.info("alert " + status, alert=alert_id, room=alert["room"], by=who)
            self._changed(alert)
        await self._tell(alert)
        return alert

    async def _advance_provisional(
        self, alert: Alert, status: AlertStatus, *, who: str, channel: str
    ) -> Alert:
        """As AlertsDb.advance, in memory and in the journal."""
        if ORDER[status] > ORDER[alert["status"]]:
            now = self._clock()
            alert["status"] = status
            if status == "acknowledged" or (
                status == "arrived" and alert["acknowledged_at_ms"] is None
            ):
                alert["acknowledged_at_ms"], alert["acknowledged_by"] = now, who
            if status == "arrived":
                alert["arrived_at_ms"] = now
            if status in ("resolved", "cancelled"):
                alert["resolved_at_ms"], alert["resolved_by"] = now, who
            alert.setdefault("timeline", []).append(
                {"at_ms": now, "what": status, "who": who, "channel": channel, "detail": None}
            )
            slot = alert.get("journal_slot")
            if self._journal is not None and slot is not None:
                try:
                    await asyncio.to_thread(self._journal.write, _journal_body(alert), slot)
                except (OSError, ValueError) as exc:
                    log.error("journal not updated", alert=alert["id"], error=str(exc))
            log.info(
                "alert " + status, alert=alert["id"], room=alert["room"], by=who, provisional=True
            )
            self._changed(alert)
        await self._tell(alert)
        return _public(alert)

    async def _tell(self, alert: Alert, *, to: tuple[str, str] | None = None) -> None:
        """The alert's status to its node; `to` one press only, else every
        press of the call (its own and those that joined it)."""
        if alert["kind"] != "call" or self._send is None:
            return
        ack = NODE_STATUS[alert["status"]]
        if to is not None:
            targets = [to]
        elif alert["device"] is None or alert["call_id"] is None:
            return
        else:
            targets = [(alert["device"], alert["call_id"])]
            if alert["id"] > 0:
                try:
                    targets += await self._db.joined(alert["id"])
                except StorageError as exc:
                    log.warning("joined presses not told", alert=alert["id"], error=str(exc))
        for device, call_id in targets:
            await self._send(device, CallAck(call_id=call_id, status=ack))

    def _changed(self, alert: Alert, *, local: bool = True) -> None:
        if alert["status"] in CLOSED:
            self._open.pop(alert["id"], None)
        elif alert["room"] and alert["kind"] == "call":
            self._open[alert["id"]] = alert["room"]
        shown = _public(alert, timeline=False)
        listeners = [*self._listeners, self._peers] if local and self._peers else self._listeners
        for listener in listeners:
            try:
                listener(shown)
            except Exception:  # one listener must not stop the others
                log.exception("alert listener failed", alert=alert["id"])


def _public(alert: Alert, *, timeline: bool = True) -> Alert:
    """An alert as the API shows it (no journal internals)."""
    out = cast(Alert, {k: v for k, v in alert.items() if k != "journal_slot"})
    if timeline and "timeline" in alert:
        out["timeline"] = list(alert["timeline"])
    elif not timeline:
        out.pop("timeline", None)
    return out


def _journalled(body: dict[str, Any]) -> Alert:
    """A journal entry as an alert. Only calls are journalled (`_journal_call`):
    one whose kind, priority or status this release does not know (a journal
    edited by hand, or left by a newer release) is still a call, kept open and
    paged rather than lost or in the way of the server's start."""
    try:
        return with_enums(dict(body))
    except (ValueError, KeyError) as exc:
        log.error(
            "journalled call with values this release does not know; kept as an open call",
            call_id=body.get("call_id"),
            room=body.get("room"),
            error=str(exc),
        )
        return with_enums(
            {
                **body,
                "kind": AlertKind.CALL,
                "priority": Priority.HIGH,
                "status": AlertStatus.OPEN,
            }
        )


def _journal_body(alert: Alert) -> dict[str, Any]:
    """What the journal keeps of a provisional alert: everything but its slot
    and id (the slot gives the id back on load); the timeline's last entries."""
    body = {k: v for k, v in alert.items() if k not in ("journal_slot", "id")}
    body["timeline"] = (
        alert["timeline"][:2] + alert["timeline"][-4:]
        if len(alert["timeline"]) > 6
        else alert["timeline"]
    )
    return body
