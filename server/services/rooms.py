"""Live rooms: the registry joined with the gateway's retained room states,
as the public sees them, and the fan-out of every change to stream clients."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime, time
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from mamaroom.contract import Registry, RegistryRoom, RoomState, RoomStateName
from mamaroom.logs import get_logger
from server.errors import NotFound
from server.services.fanout import Fanout

log = get_logger(__name__)
#: Encoded forms of the rooms kept at once (LiveRooms.encoded): the callers'
#: keys include query filters, which a client chooses, so the count is bounded.
ENCODED_MAX = 64


class PublicRoom(BaseModel):
    """One room as a mother's phone sees it. Never reveals an emergency call."""

    id: str
    name: str
    name_en: str
    building: str
    building_en: str
    floor: int
    device: str | None
    state: RoomStateName
    #: When the room entered `state` (ISO 8601), None if never heard from.
    since: datetime | None
    access: str
    company: str
    hours: str
    amenities: list[str]
    in_service: bool
    #: Being cleaned right now: not offered to mothers meanwhile.
    cleaning: bool = False
    #: Inside its opening hours now (site time zone).
    open_now: bool
    #: Free, in service and open: a mother can walk in.
    available: bool


def is_open(hours: str, now: datetime) -> bool:
    """`HH:MM-HH:MM` in site time (empty = always open; `24:00` = midnight)."""
    if not hours:
        return True
    start_s, end_s = hours.split("-")
    start = time.fromisoformat(start_s)
    t = now.time()
    if end_s == "24:00":
        return t >= start
    end = time.fromisoformat(end_s)
    return start <= t < end if start <= end else (t >= start or t < end)


class LiveRooms:
    def __init__(self, tz: ZoneInfo, fanout: Fanout) -> None:
        self._tz = tz
        self._fanout = fanout
        self._registry: dict[str, RegistryRoom] = {}
        self._states: dict[str, RoomState] = {}
        self._rooms: dict[str, PublicRoom] = {}
        self._open_calls: set[str] = set()
        #: What the public was last shown of each room: (state, since, whether
        #: a call made it `occupied`), so a call's start and end look like doors.
        self._shown: dict[str, tuple[RoomStateName, datetime | None, bool]] = {}
        self._encoded: dict[Hashable, bytes] = {}

    # --- inputs -----------------------------------------------------------

    async def set_registry(self, registry: Registry) -> None:
        self._registry = {r.id: r for r in registry.rooms}
        for gone in set(self._rooms) - set(self._registry):
            del self._rooms[gone]
            self._shown.pop(gone, None)
            self._encoded.clear()
        self._recompute(list(self._registry))

    def set_state(self, room: str, state: RoomState | None) -> None:
        if state is None:
            self._states.pop(room, None)
        else:
            self._states[room] = state
        if room in self._registry:
            self._recompute([room])

    def set_open_calls(self, rooms: set[str]) -> None:
        """Rooms with an open emergency call: public data shows them `occupied`."""
        changed = rooms ^ self._open_calls
        self._open_calls = set(rooms)
        self._recompute([r for r in changed if r in self._registry])

    def refresh(self) -> None:
        """Re-evaluate time-dependent fields (opening hours)."""
        self._recompute(list(self._registry))

    def _recompute(self, room_ids: list[str]) -> None:
        now = datetime.now(self._tz)
        for room_id in room_ids:
            new = self._public(self._registry[room_id], now)
            if self._rooms.get(room_id) != new:
                self._rooms[room_id] = new
                self._encoded.clear()
                self._fanout.publish("room", new)

    def _public(self, reg: RegistryRoom, now: datetime) -> PublicRoom:
        live = self._states.get(reg.id)
        # A state reported for another device (just moved) is not this room's truth.
        if live is not None and live.device != reg.device:
            live = None
        live_state = live.state if live else RoomStateName.OFFLINE
        state, since = live_state, (live.since if live else None)
        # A call is for staff to see, not the public (PIPL: health data): a free
        # room with an open call is shown `occupied`, and its `since` and its
        # transitions look exactly as a door's would. An offline room stays
        # offline (its node's next message brings it back in any case).
        masked = reg.id in self._open_calls and live_state is RoomStateName.FREE
        if masked:
            state = RoomStateName.OCCUPIED
        prev = self._shown.get(reg.id)
        if prev is None and masked:
            since = now  # first seen with a call (a restart): not its free `since`
        elif prev is not None and (masked or prev[2]):
            prev_state, prev_since, _ = prev
            if state is prev_state:
                since = prev_since  # no change to the public
            elif masked or since is None or prev_since is None or since < prev_since:
                since = now  # the call began or ended now, as a door would
        self._shown[reg.id] = (state, since, masked)
        open_now = is_open(reg.hours, now)
        return PublicRoom(
            id=reg.id,
            name=reg.name,
            name_en=reg.name_en,
            building=reg.building,
            building_en=reg.building_en,
            floor=reg.floor,
            device=reg.device,
            state=state,
            since=since,
            access=reg.access,
            company=reg.company,
            hours=reg.hours,
            amenities=reg.amenities,
            in_service=reg.in_service,
            cleaning=reg.cleaning,
            open_now=open_now,
            available=(
                state is RoomStateName.FREE and reg.in_service and open_now and not reg.cleaning
            ),
        )

    # --- reads ----------------------------------------------------------------

    def query(
        self,
        *,
        building: str | None = None,
        floor: int | None = None,
        state: RoomStateName | None = None,
    ) -> list[PublicRoom]:
        rooms = sorted(self._rooms.values(), key=lambda r: (r.building, r.floor, r.id))
        return [
            r
            for r in rooms
            if (building is None or building in (r.building, r.building_en))
            and (floor is None or r.floor == floor)
            and (state is None or r.state is state)
        ]

    def encoded(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """`build()`, remembered under `key` until any room changes.

        The room list is read far more often than a room changes, and
        encoding 190 rooms was most of the cost of `GET /api/rooms` and of
        each new stream's snapshot (bench/rooms_api.py)."""
        body = self._encoded.get(key)
        if body is None:
            body = build()
            if len(self._encoded) < ENCODED_MAX:
                self._encoded[key] = body
        return body

    def get(self, room_id: str) -> PublicRoom:
        try:
            return self._rooms[room_id]
        except KeyError:
            raise NotFound(f"no room {room_id!r}") from None
