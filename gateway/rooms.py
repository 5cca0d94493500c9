"""Room state derivation: free / occupied / offline, from what the devices say.

Pure logic with the time passed in, so tests drive it with an exact clock.
A room is offline when it has no device, its device's status is `offline`
(birth/last will), nothing arrived from the device within the supervision
window, or no occupancy is known yet. Stale data is never shown as free.

Two clocks: the wall time (`now_ms`, passed in) dates what is published
(`since`, `last_seen`); the supervision window is measured on a monotonic
clock (`mono`, injected), so a step of the wall clock can neither keep a
silent room "free" nor time out a live one. A device's own clock decides
nothing: order is `(boot, seq)` within a boot and arrival across boots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from mamaroom.clock import from_ms, monotonic_ms
from mamaroom.contract import (
    Envelope,
    Occupancy,
    Registry,
    RegistryRoom,
    RoomState,
    RoomStateName,
)
from mamaroom.storage.device_state import DeviceRow, RoomStateRow


@dataclass
class DeviceView:
    status: str | None = None
    last_seen_ms: int | None = None
    occupied: bool | None = None
    boot: int | None = None
    seq: int | None = None
    #: Time of the last applied message (dates a state change; orders nothing).
    time_ms: int | None = None
    #: Monotonic time of the last sign of life: what supervision measures.
    heard_mono: int | None = None
    #: Boots this device has left, newest first: their messages are old news.
    old_boots: tuple[int, ...] = ()
    #: Monotonic time of the last message of the current boot.
    boot_heard_mono: int | None = None


class _Derived(NamedTuple):  # built per message: a NamedTuple is cheap to build and compare
    state: RoomStateName
    device: str | None
    reason: str | None


#: Boots remembered per device to recognise a late message from an earlier one.
OLD_BOOTS = 8


class RoomTracker:
    def __init__(self, supervision_s: float, *, mono: Callable[[], int] = monotonic_ms) -> None:
        self.supervision_ms = int(supervision_s * 1000)
        self.mono = mono
        self.registry: Registry | None = None
        self.rooms: dict[str, RegistryRoom] = {}
        self.device_room: dict[str, str] = {}
        self.device_place: dict[str, tuple[str, str | None, int | None]] = {}
        self.room_device: dict[str, str | None] = {}
        self.devices: dict[str, DeviceView] = {}
        #: What was last published per room: (derived, since_ms).
        self.published: dict[str, tuple[_Derived, int | None]] = {}

    # --- inputs -------------------------------------------------------------

    def restore(
        self,
        devices: list[DeviceRow],
        rooms: list[RoomStateRow],
        now_ms: int,
        boots: dict[str, list[int]] | None = None,
    ) -> None:
        """Resume from the store after a restart, so states and `since` survive.
        Stored times are wall times: one in the future (the clock went back
        while the gateway was down) counts as now, never later. `boots`: each
        device's boots seen, newest first (the loss audit keeps them)."""
        mono = self.mono()
        boots = boots or {}
        for d in devices:
            last_seen = None if d.last_seen_ms is None else min(d.last_seen_ms, now_ms)
            heard = None if last_seen is None else mono - (now_ms - last_seen)
            self.devices[d.device] = DeviceView(
                status=d.status,
                last_seen_ms=last_seen,
                occupied=d.occupied,
                boot=d.boot,
                seq=d.seq,
                time_ms=d.occupied_ms,
                heard_mono=heard,
                boot_heard_mono=heard,
                old_boots=tuple(b for b in boots.get(d.device, ()) if b != d.boot)[:OLD_BOOTS],
            )
        for r in rooms:
            since = None if r.since_ms is None else min(r.since_ms, now_ms)
            self.published[r.room] = (_Derived(RoomStateName(r.state), r.device, r.reason), since)

    def set_registry(self, registry: Registry, now_ms: int) -> tuple[list[RoomState], list[str]]:
        """Apply a new registry: (room states that changed, rooms that no longer exist)."""
        self.registry = registry
        self.rooms = {r.id: r for r in registry.rooms}
        self.room_device = {r.id: r.device for r in registry.rooms}
        self.device_room = registry.device_rooms()
        self.device_place = {
            device: (room, self.rooms[room].building, self.rooms[room].floor)
            for device, room in self.device_room.items()
        }
        removed = [room for room in self.published if room not in self.room_device]
        for room in removed:
            del self.published[room]
        return self._refresh(list(self.room_device), now_ms), removed

    def room_of(self, device: str) -> str | None:
        return self.device_room.get(device)

    def place_of(self, device: str) -> tuple[str, str | None, int | None] | None:
        """(room, building, floor) of a device, or None if the registry lacks it."""
        return self.device_place.get(device)

    def on_status(self, device: str, status: str, *, live: bool, now_ms: int) -> list[RoomState]:
        view = self._view(device)
        view.status = status
        if live:
            view.last_seen_ms, view.heard_mono = now_ms, self.mono()
        return self._refresh_device(device, now_ms)

    def on_message(self, device: str, msg: Envelope, time_ms: int, now_ms: int) -> list[RoomState]:
        """A message from a device. Within a boot, order is by seq, never by
        arrival: with several gateways, or a redelivery, an older message can
        come later. Across boots (a boot id need not grow) arrival decides: a
        boot not seen before is the newest, and a message of a boot the device
        has left changes nothing, whatever its `ts`, while the current boot
        is heard within the supervision window. (A node whose boot counter
        was reset does reuse an old boot: once its current one has been
        silent for a window, the reused boot is taken as the current one.)
        `time_ms` (the message's trusted time) only dates the change, and
        never later than now."""
        view = self._view(device)
        mono = self.mono()
        view.last_seen_ms, view.heard_mono = now_ms, mono
        if view.boot == msg.boot:
            newer = view.seq is None or msg.seq > view.seq
            view.boot_heard_mono = mono
        else:
            newer = (
                msg.boot not in view.old_boots
                or view.boot_heard_mono is None
                or mono - view.boot_heard_mono > self.supervision_ms
            )
            if newer and view.boot is not None:
                view.old_boots = (view.boot, *(b for b in view.old_boots if b != msg.boot))[
                    :OLD_BOOTS
                ]
        if newer:
            view.boot_heard_mono = mono
            view.boot, view.seq, view.time_ms = msg.boot, msg.seq, min(time_ms, now_ms)
            if isinstance(msg, Occupancy):
                view.occupied = msg.occupied
        return self._refresh_device(
            device, now_ms, event_ms=min(time_ms, now_ms) if newer else None
        )

    def clock_stepped(self, step_ms: int, now_ms: int) -> list[RoomState]:
        """The wall clock jumped by `step_ms`: move the wall times kept so far
        with it, so `last_seen` and `since` keep meaning "that long ago" and
        are never in the future. Supervision is unaffected (monotonic).
        Returns every room's state, re-dated, to publish again."""
        for view in self.devices.values():
            if view.last_seen_ms is not None:
                view.last_seen_ms = min(view.last_seen_ms + step_ms, now_ms)
            if view.time_ms is not None:
                view.time_ms = min(view.time_ms + step_ms, now_ms)
        for room, (derived, since) in list(self.published.items()):
            if since is not None:
                self.published[room] = (derived, min(since + step_ms, now_ms))
        return self.all_states()

    def _view(self, device: str) -> DeviceView:
        view = self.devices.get(device)
        if view is None:  # not setdefault: that builds a DeviceView on every call
            view = self.devices[device] = DeviceView()
        return view

    def tick(self, now_ms: int) -> list[RoomState]:
        """Re-derive every room: the supervision window (monotonic) may have run out."""
        return self._refresh(list(self.room_device), now_ms)

    # --- derivation -----------------------------------------------------------

    def derive(self, room: str, now_ms: int) -> _Derived:
        device = self.room_device.get(room)
        if device is None:
            return _Derived(RoomStateName.OFFLINE, None, "no_device")
        view = self.devices.get(device)
        if view is None or view.heard_mono is None:
            return _Derived(RoomStateName.OFFLINE, device, "no_data")
        if view.status == "offline":
            return _Derived(RoomStateName.OFFLINE, device, "device_offline")
        if self.mono() - view.heard_mono > self.supervision_ms:
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
            room=room,
            state=derived.state,
            since=from_ms(since_ms),
            device=derived.device,
            reason=derived.reason,
            last_seen=from_ms(view.last_seen_ms if view else None),
        )

    def all_states(self) -> list[RoomState]:
        return [s for room in self.room_device if (s := self.state_of(room)) is not None]

    def _refresh_device(
        self, device: str, now_ms: int, event_ms: int | None = None
    ) -> list[RoomState]:
        room = self.device_room.get(device)
        return [] if room is None else self._refresh([room], now_ms, event_ms)

    def _refresh(
        self, rooms: list[str], now_ms: int, event_ms: int | None = None
    ) -> list[RoomState]:
        changed: list[RoomState] = []
        for room in rooms:
            derived = self.derive(room, now_ms)
            old = self.published.get(room)
            if old is not None and old[0] == derived:
                continue
            # A door event dates the change; a timeout or a will dates it now.
            since = (
                min(event_ms, now_ms) if event_ms is not None and derived.reason is None else now_ms
            )
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
