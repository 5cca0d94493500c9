"""Room state derivation: free / occupied / offline, from what the devices say.

Pure logic with the time passed in, so tests drive it with an exact clock.
A room is offline when it has no device, its device's status is `offline`
(birth/last will), nothing arrived from the device within the supervision
window, or no occupancy is known yet. Stale data is never shown as free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from mamaroom.clock import from_ms
from mamaroom.contract import (
    Envelope,
    Occupancy,
    Registry,
    RegistryRoom,
    RoomState,
    RoomStateName,
)
from mamaroom.storage.sqlite import DeviceRow, RoomStateRow


@dataclass
class DeviceView:
    status: str | None = None
    last_seen_ms: int | None = None
    occupied: bool | None = None
    boot: int | None = None
    seq: int | None = None
    #: Time of the last applied message, to order messages across boots.
    time_ms: int | None = None


class _Derived(NamedTuple):  # built per message: a NamedTuple is cheap to build and compare
    state: RoomStateName
    device: str | None
    reason: str | None


class RoomTracker:
    def __init__(self, supervision_s: float) -> None:
        self.supervision_ms = int(supervision_s * 1000)
        self.registry: Registry | None = None
        self.rooms: dict[str, RegistryRoom] = {}
        self.device_room: dict[str, str] = {}
        self.device_place: dict[str, tuple[str, str | None, int | None]] = {}
        self.room_device: dict[str, str | None] = {}
        self.devices: dict[str, DeviceView] = {}
        #: What was last published per room: (derived, since_ms).
        self.published: dict[str, tuple[_Derived, int | None]] = {}

    # --- inputs -------------------------------------------------------------

    def restore(self, devices: list[DeviceRow], rooms: list[RoomStateRow]) -> None:
        """Resume from the store after a restart, so states and `since` survive."""
        for d in devices:
            self.devices[d.device] = DeviceView(
                status=d.status, last_seen_ms=d.last_seen_ms, occupied=d.occupied,
                boot=d.boot, seq=d.seq, time_ms=d.occupied_ms,
            )
        for r in rooms:
            self.published[r.room] = (
                _Derived(RoomStateName(r.state), r.device, r.reason), r.since_ms
            )

    def set_registry(self, registry: Registry, now_ms: int) -> tuple[list[RoomState], list[str]]:
        """Apply a new registry: (room states that changed, rooms that no longer exist)."""
        self.registry = registry
        self.rooms = {r.id: r for r in registry.rooms}
        self.room_device = {r.id: r.device for r in registry.rooms}
        self.device_room = registry.device_rooms()
        self.device_place = {device: (room, self.rooms[room].building, self.rooms[room].floor)
                             for device, room in self.device_room.items()}
        removed = [room for room in self.published if room not in self.room_device]
        for room in removed:
            del self.published[room]
        return self._refresh(list(self.room_device), now_ms), removed

    def room_of(self, device: str) -> str | None:
        return self.device_room.get(device)

    def place_of(self, device: str) -> tuple[str, str | None, int | None] | None:
        """(room, building, floor) of a device, or None if the registry lacks it."""
        return self.device_place.get(device)

    def on_status(self, device: str, status: str, live: bool, now_ms: int) -> list[RoomState]:
        view = self._view(device)
        view.status = status
        if live:
            view.last_seen_ms = max(view.last_seen_ms or 0, now_ms)
        return self._refresh_device(device, now_ms)

    def on_message(self, device: str, msg: Envelope, time_ms: int, now_ms: int) -> list[RoomState]:
        """A message from a device. Order is by (boot, seq), never by arrival:
        with several gateways, or a redelivery, an older message can come later.
        Across boots (a boot id need not grow) the message time decides."""
        view = self._view(device)
        view.last_seen_ms = max(view.last_seen_ms or 0, now_ms)
        if view.boot == msg.boot and view.seq is not None:
            newer = msg.seq > view.seq
        else:
            newer = view.time_ms is None or time_ms >= view.time_ms
        if newer:
            view.boot, view.seq, view.time_ms = msg.boot, msg.seq, time_ms
            if isinstance(msg, Occupancy):
                view.occupied = msg.occupied
        return self._refresh_device(device, now_ms, event_ms=time_ms if newer else None)

    def _view(self, device: str) -> DeviceView:
        view = self.devices.get(device)
        if view is None:  # not setdefault: that builds a DeviceView on every call
            view = self.devices[device] = DeviceView()
        return view

    def tick(self, now_ms: int) -> list[RoomState]:
        """Re-derive every room: the supervision window may have run out."""
        return self._refresh(list(self.room_device), now_ms)

    # --- derivation -----------------------------------------------------------

    def derive(self, room: str, now_ms: int) -> _Derived:
        device = self.room_device.get(room)
        if device is None:
            return _Derived(RoomStateName.OFFLINE, None, "no_device")
        view = self.devices.get(device)
        if view is None or view.last_seen_ms is None:
            return _Derived(RoomStateName.OFFLINE, device, "no_data")
        if view.status == "offline":
            return _Derived(RoomStateName.OFFLINE, device, "device_offline")
        if now_ms - view.last_seen_ms > self.supervision_ms:
            return _Derived(RoomStateName.OFFLINE, device, "silent")
        if view.occupied is None:
            return _Derived(RoomStateName.OFFLINE, device, "no_data")
        state = RoomStateName.OCCUPIED if view.occupied else RoomStateName.FREE
        return _Derived(state, device, None)

    def state_of(self, room: str) -> RoomState | None:
        entry = self.published.get(room)
        if entry is None:
            return None
        derived, since_ms = entry
        view = self.devices.get(derived.device) if derived.device else None
        return RoomState(
            room=room, state=derived.state, since=from_ms(since_ms), device=derived.device,
            reason=derived.reason, last_seen=from_ms(view.last_seen_ms if view else None),
        )

    def all_states(self) -> list[RoomState]:
        return [s for room in self.room_device if (s := self.state_of(room)) is not None]

    def _refresh_device(self, device: str, now_ms: int,
                        event_ms: int | None = None) -> list[RoomState]:
        room = self.device_room.get(device)
        return [] if room is None else self._refresh([room], now_ms, event_ms)

    def _refresh(self, rooms: list[str], now_ms: int,
                 event_ms: int | None = None) -> list[RoomState]:
        changed: list[RoomState] = []
        for room in rooms:
            derived = self.derive(room, now_ms)
            old = self.published.get(room)
            if old is not None and old[0] == derived:
                continue
            # A door event dates the change; a timeout or a will dates it now.
            since = event_ms if event_ms is not None and derived.reason is None else now_ms
            if old is not None and old[0].state == derived.state:
                since = old[1] if old[1] is not None else since  # same state, other detail
            self.published[room] = (derived, since)
            state = self.state_of(room)
            assert state is not None
            changed.append(state)
        return changed

    def rows(self, states: list[RoomState]) -> list[RoomStateRow]:
        out = []
        for s in states:
            _, since_ms = self.published[s.room]
            out.append(RoomStateRow(s.room, s.state.value, since_ms, s.device, s.reason))
        return out
