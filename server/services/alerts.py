"""Emergency calls as alerts: raised on the first `press` of a call_id,
committed before the node hears `received`, moved forwards by staff (console
ack, staff key `presence`, `reset` or console resolve), every step in the
timeline. A call is never lost: if the commit fails, the node is told
nothing and re-sends its press every 3 s until it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from mamaroom.clock import wall_ms
from mamaroom.contract import Call, CallAck
from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from server.alerts_db import AlertsDb
from server.errors import NotFound

log = get_logger(__name__)

#: What the node's lamp shows for each alert status.
NODE_STATUS = {"open": "received", "acknowledged": "acknowledged", "arrived": "arrived",
               "resolved": "resolved", "cancelled": "resolved"}

def present(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert as the API and the staff stream show it: the contract's ISO
    8601 times (`raised_at`, ...) beside the stored `*_at_ms` integers, and
    the response times in seconds (raised → acknowledged, arrived, resolved)."""
    out = dict(alert)
    raised = alert["raised_at_ms"]
    for step in ("raised", "acknowledged", "arrived", "resolved"):
        out[f"{step}_at"] = _iso(alert.get(f"{step}_at_ms"))
    out["response_s"] = {
        step: (alert[f"{step}_at_ms"] - raised) / 1000 if alert.get(f"{step}_at_ms") else None
        for step in ("acknowledged", "arrived", "resolved")}
    if "timeline" in alert:
        out["timeline"] = [{**e, "at": _iso(e["at_ms"])} for e in alert["timeline"]]
    return out


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


SendAck = Callable[[str, CallAck], Awaitable[None]]
Listener = Callable[[dict[str, Any]], None]


class AlertService:
    def __init__(self, db: AlertsDb, *, clock: Callable[[], int] = wall_ms) -> None:
        self._db = db
        self._clock = clock
        self._send: SendAck | None = None
        self._listeners: list[Listener] = []
        #: Open call alerts by id → room.
        self._open: dict[int, str] = {}

    def connect(self, send: SendAck) -> None:
        self._send = send

    async def channel_down(self, channel: str, detail: str) -> None:
        """A paging channel is down: its own `paging_link` alert (one while open)."""
        alert, created = await self._db.raise_once(
            "paging_link", channel, priority="high", at_ms=self._clock(),
            detail=f"{channel}: {detail}", channel=channel)
        if created:
            log.error("paging link down", channel=channel, detail=detail, alert=alert["id"])
            self._changed(alert)

    async def channel_up(self, channel: str) -> None:
        await self.clear("paging_link", {channel}, who=channel)

    async def raise_once(self, kind: str, subject: str, *, priority: str, detail: str,
                         room: str | None = None, device: str | None = None) -> None:
        """A system alert (device_offline, paging_link...) unless one is open for `subject`."""
        alert, created = await self._db.raise_once(
            kind, subject, priority=priority, at_ms=self._clock(), detail=detail,
            channel="mamaroom", room=room, device=device)
        if created:
            log.warning(kind.replace("_", " "), subject=subject, detail=detail,
                        alert=alert["id"])
            self._changed(alert)

    async def clear(self, kind: str, subjects: set[str], *, who: str = "mamaroom") -> None:
        """Resolve the open alerts of `kind` about these subjects (the cause is gone)."""
        for alert in await self._db.query(kind=kind, open_only=True):
            if alert["subject"] in subjects:
                await self._advance(alert["id"], "resolved", who=who, channel="mamaroom")

    async def open_subjects(self, kind: str) -> set[str]:
        return {a["subject"] for a in await self._db.query(kind=kind, open_only=True)}

    async def note_paged(self, alert_id: int, channel: str, target: str, ok: bool,
                         detail: str) -> None:
        await self._db.note(alert_id, "paged" if ok else "page failed", at_ms=self._clock(),
                            who=target, channel=channel, detail=detail)

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def open_rooms(self) -> set[str]:
        """Rooms with an open call: shown as `occupied` to the public, never as a call."""
        return set(self._open.values())

    async def load(self) -> None:
        self._open = {a["id"]: a["room"]
                      for a in await self._db.query(open_only=True, kind="call") if a["room"]}

    # --- from the node ----------------------------------------------------------

    async def on_call(self, device: str, room: str, call: Call) -> None:
        now = self._clock()
        if call.action == "press":
            try:
                test = await self._db.test_mode(room, now) is not None
                alert, created = await self._db.raise_call(
                    room=room, device=device, call_id=call.call_id, at_ms=now, channel="button",
                    test=test)
            except StorageError as exc:
                # Nothing committed, nothing acknowledged: the node re-sends in 3 s.
                log.error("call not committed; waiting for the node's re-send",
                          call_id=call.call_id, room=room, error=str(exc))
                return
            if created:
                log.warning("EMERGENCY CALL", room=room, device=device, call_id=call.call_id,
                            alert=alert["id"])
                self._changed(alert)
            await self._tell(alert)  # escalation pages staff on its next tick
            return
        known = await self._db.by_call(device, call.call_id)
        if known is None:
            log.warning("call event for an unknown call", device=device, call_id=call.call_id,
                        action=call.action)
            return
        if call.action == "shown":
            await self._db.note(known["id"], "shown", at_ms=now, who=device, channel="lamp",
                                detail=call.status)
            return
        status = "arrived" if call.action == "presence" else "resolved"
        await self._advance(known["id"], status, who="staff key", channel="staff key")

    async def on_device_online(self, device: str) -> None:
        """A node is back: re-send the status of each of its open calls."""
        for alert in await self._db.query(device=device, kind="call", open_only=True):
            await self._tell(alert)

    # --- from staff -------------------------------------------------------------

    async def acknowledge(self, alert_id: int, who: str) -> dict[str, Any]:
        return await self._advance(alert_id, "acknowledged", who=who, channel="console")

    async def resolve(self, alert_id: int, who: str) -> dict[str, Any]:
        return await self._advance(alert_id, "resolved", who=who, channel="console")

    async def set_test_mode(self, room: str, tester_pager: str | None, minutes: float,
                            who: str) -> None:
        """Commissioning: the room's calls page only `tester_pager`, marked TEST."""
        await self._db.set_test_mode(room, tester_pager, self._clock() + int(minutes * 60_000),
                                     who)
        log.info("test mode " + ("on" if tester_pager else "off"), room=room, by=who,
                 tester=tester_pager)

    async def tester_of(self, room: str) -> str | None:
        return await self._db.test_mode(room, self._clock())

    async def get(self, alert_id: int) -> dict[str, Any]:
        alert = await self._db.get(alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return alert

    async def query(self, *, status: str | None, kind: str | None,
                    open_only: bool = False, limit: int = 500) -> list[dict[str, Any]]:
        return await self._db.query(status=status, kind=kind, open_only=open_only,
                                    limit=limit)

    # --- internals ---------------------------------------------------------------

    async def _advance(self, alert_id: int, status: str, *, who: str,
                       channel: str) -> dict[str, Any]:
        try:
            alert, changed = await self._db.advance(alert_id, status, at_ms=self._clock(),
                                                    who=who, channel=channel)
        except KeyError:
            raise NotFound(f"no alert {alert_id}") from None
        if changed:
            log.info("alert " + status, alert=alert_id, room=alert["room"], by=who)
            self._changed(alert)
        await self._tell(alert)
        return alert

    async def _tell(self, alert: dict[str, Any]) -> None:
        if alert["kind"] != "call" or self._send is None:
            return
        await self._send(alert["device"], CallAck(call_id=alert["call_id"],
                                                  status=NODE_STATUS[alert["status"]]))

    def _changed(self, alert: dict[str, Any]) -> None:
        if alert["status"] in ("resolved", "cancelled"):
            self._open.pop(alert["id"], None)
        elif alert["room"] and alert["kind"] == "call":
            self._open[alert["id"]] = alert["room"]
        for listener in self._listeners:
            listener(alert)
