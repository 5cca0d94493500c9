"""Room-state derivation with an exact clock: stale data is never `free`.

The tracker takes the wall time as an argument and reads its monotonic clock
from `mono`: here both come from `at()`, unless a test steps one of them."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.rooms import RoomTracker
from mamaroom.contract import Occupancy, Registry, RegistryRoom, RoomStateName, Telemetry
from mamaroom.storage.device_state import DeviceRow, RoomStateRow

T0 = 1_800_000_000_000  # ms
HOUR = 3_600_000
#: The monotonic clock the trackers read.
MONO = [T0]


def at(ms: int) -> int:
    """Wall and monotonic time both at `ms` (a clock that never stepped)."""
    MONO[0] = ms
    return ms


def registry(*pairs: tuple[str, str | None], version: int = 1) -> Registry:
    return Registry(
        version=version,
        updated_at=datetime.now(UTC),
        rooms=[
            RegistryRoom(id=room, name=room, name_en=room, building="B", floor=1, device=dev)
            for room, dev in pairs
        ],
    )


def occ(occupied: bool, seq: int, boot: int = 1, ts: int | None = None) -> Occupancy:
    return Occupancy(v=1, boot=boot, seq=seq, ts=ts, occupied=occupied, source="door")


def tracker() -> RoomTracker:
    t = RoomTracker(supervision_s=150, mono=lambda: MONO[0])
    t.set_registry(registry(("R1", "d1"), ("R2", "d2"), ("R3", None)), at(T0))
    return t


def test_unknown_is_offline_with_a_reason() -> None:
    t = tracker()
    assert {s.room: s.reason for s in t.all_states()} == {
        "R1": "no_data",
        "R2": "no_data",
        "R3": "no_device",
    }
    # Online but no occupancy reported yet: still not free.
    t.on_status("d1", "online", live=True, now_ms=T0)
    assert t.derive("R1", T0).reason == "no_data"


def test_occupancy_then_silence_then_a_sign_of_life() -> None:
    t = tracker()
    [s] = t.on_message("d1", occ(False, 1), T0, T0)
    assert s.state is RoomStateName.FREE and s.since == datetime.fromtimestamp(T0 / 1000, UTC)
    assert t.tick(at(T0 + 150_000)) == []  # exactly at the window: still fresh
    [s] = t.tick(at(T0 + 150_001))
    assert s.state is RoomStateName.OFFLINE and s.reason == "silent"
    tel = Telemetry(v=1, boot=1, seq=2, ts=None, rssi=-60)
    [s] = t.on_message("d1", tel, T0 + 200_000, at(T0 + 200_000))
    assert s.state is RoomStateName.FREE  # last known occupancy, freshly confirmed


def test_last_will_wins_until_the_next_birth() -> None:
    t = tracker()
    t.on_message("d1", occ(True, 1), T0, T0)
    [s] = t.on_status("d1", "offline", live=False, now_ms=T0 + 1000)
    assert s.state is RoomStateName.OFFLINE and s.reason == "device_offline"
    assert t.on_message("d1", occ(True, 2), T0 + 2000, T0 + 2000) == []  # still offline
    [s] = t.on_status("d1", "online", live=True, now_ms=T0 + 3000)
    assert s.state is RoomStateName.OCCUPIED


def test_an_older_message_does_not_roll_state_back() -> None:
    t = tracker()
    t.on_message("d1", occ(True, 5), T0, T0)
    assert t.on_message("d1", occ(False, 4), T0 + 1, T0 + 1) == []
    assert t.derive("R1", T0 + 2).state is RoomStateName.OCCUPIED
    # After a reboot seq restarts: a new boot is always newer.
    [s] = t.on_message("d1", occ(False, 1, boot=2), T0 + 3, T0 + 3)
    assert s.state is RoomStateName.FREE


def test_moving_a_device_moves_its_state() -> None:
    t = tracker()
    t.on_message("d1", occ(True, 1), T0, T0)
    changed, removed = t.set_registry(registry(("R1", None), ("R3", "d1"), version=2), T0 + 10)
    assert removed == ["R2"]
    states = {s.room: (s.state, s.reason) for s in changed}
    assert states == {
        "R1": (RoomStateName.OFFLINE, "no_device"),
        "R3": (RoomStateName.OCCUPIED, None),
    }


def test_restore_keeps_since_across_a_restart() -> None:
    t = RoomTracker(supervision_s=150, mono=lambda: MONO[0])
    since = T0 - 600_000
    t.restore(
        [
            DeviceRow(
                "d1",
                "R1",
                T0 - 1000,
                "online",
                T0 - 5000,
                1,
                9,
                1,
                True,
                since,
                None,
                None,
                None,
                None,
                None,
            )
        ],
        [RoomStateRow("R1", "occupied", since, "d1", None)],
        at(T0),
    )
    changed, _ = t.set_registry(registry(("R1", "d1")), T0)
    assert changed == []  # nothing changed, nothing re-announced
    state = t.state_of("R1")
    assert state is not None and state.state is RoomStateName.OCCUPIED
    assert state.since == datetime.fromtimestamp(since / 1000, UTC)


def test_a_wall_clock_step_back_does_not_keep_a_silent_room_free() -> None:
    t = tracker()
    t.on_message("d1", occ(False, 1), T0, at(T0))
    # The wall clock goes back an hour; monotonic time runs on.
    MONO[0] = T0 + 150_001
    [s] = t.tick(T0 + 150_001 - HOUR)
    assert s.state is RoomStateName.OFFLINE and s.reason == "silent"
    # The step, once noticed, moves the kept wall times: nothing in the future.
    now = T0 + 150_002 - HOUR
    for state in t.clock_stepped(-HOUR, now):
        assert state.since is None or state.since.timestamp() * 1000 <= now
        assert state.last_seen is None or state.last_seen.timestamp() * 1000 <= now


def test_a_wall_clock_step_forward_does_not_time_out_a_live_room() -> None:
    t = tracker()
    t.on_message("d1", occ(True, 1), T0, at(T0))
    MONO[0] = T0 + 10_000  # 10 s later, but the wall clock says an hour and 10 s
    assert t.tick(T0 + HOUR + 10_000) == []
    assert t.derive("R1", T0 + HOUR + 10_000).state is RoomStateName.OCCUPIED


def test_a_device_clock_a_year_ahead_decides_nothing() -> None:
    t = tracker()
    year = 365 * 24 * HOUR
    # A bad clock: `since` is never later than now.
    [s] = t.on_message("d1", occ(False, 1, ts=T0 + year), T0 + year, at(T0))
    assert s.state is RoomStateName.FREE
    assert s.since is not None and s.since.timestamp() * 1000 == T0
    # After a reboot with a good clock, the new boot's messages win by arrival.
    [s] = t.on_message("d1", occ(True, 1, boot=2, ts=T0 + 1000), T0 + 1000, at(T0 + 1000))
    assert s.state is RoomStateName.OCCUPIED
    # A late message of the boot it left changes nothing, whatever its ts.
    for ts in (None, T0 + year, T0 + 2000):
        assert t.on_message("d1", occ(False, 2, ts=ts), ts or T0 + 2000, at(T0 + 2000)) == []
    assert t.derive("R1", T0 + 2000).state is RoomStateName.OCCUPIED
    # And the supervision window is the gateway's: silence still turns it offline.
    [s] = t.tick(at(T0 + 2000 + 150_001))
    assert s.reason == "silent"


def test_restore_never_dates_anything_in_the_future() -> None:
    t = RoomTracker(supervision_s=150, mono=lambda: MONO[0])
    later = T0 + HOUR  # stored before the clock went back an hour
    t.restore(
        [
            DeviceRow(
                "d1",
                "R1",
                later,
                "online",
                later,
                1,
                9,
                1,
                False,
                later,
                None,
                None,
                None,
                None,
                None,
            )
        ],
        [RoomStateRow("R1", "free", later, "d1", None)],
        at(T0),
    )
    t.set_registry(registry(("R1", "d1")), T0)
    state = t.state_of("R1")
    assert state is not None and state.since is not None and state.last_seen is not None
    assert state.since.timestamp() * 1000 <= T0 and state.last_seen.timestamp() * 1000 <= T0
    # Counted as heard "now", so the window runs out on time, not an hour late.
    [s] = t.tick(at(T0 + 150_001))
    assert s.reason == "silent"


def test_a_reused_boot_is_taken_once_the_current_one_is_silent() -> None:
    # A node whose boot counter was reset reuses a boot it had: ignored while
    # the current boot is heard, taken once that has been silent for a window.
    t = tracker()
    t.on_message("d1", occ(False, 1, boot=1), T0, at(T0))
    t.on_message("d1", occ(True, 1, boot=2), T0, at(T0 + 1000))
    assert t.on_message("d1", occ(False, 2, boot=1), T0, at(T0 + 2000)) == []
    assert t.derive("R1", T0 + 2000).state is RoomStateName.OCCUPIED
    [s] = t.on_message("d1", occ(False, 1, boot=1), T0, at(T0 + 1000 + 150_001))
    assert s.state is RoomStateName.FREE


def test_restored_boots_keep_a_late_old_boot_message_out() -> None:
    t = RoomTracker(supervision_s=150, mono=lambda: MONO[0])
    t.restore(
        [DeviceRow("d1", "R1", T0, "online", T0, 2, 9, 2, True, T0, None, None, None, None, None)],
        [RoomStateRow("R1", "occupied", T0, "d1", None)],
        at(T0),
        {"d1": [2, 1]},
    )
    t.set_registry(registry(("R1", "d1")), T0)
    assert t.on_message("d1", occ(False, 50, boot=1), T0, at(T0 + 10)) == []
    assert t.derive("R1", T0 + 10).state is RoomStateName.OCCUPIED
