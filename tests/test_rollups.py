"""Hourly occupancy rollups, computed by mamaroom itself."""

from __future__ import annotations

import pytest

from mamaroom.storage.rollups import HOUR_MS, HourRollup, OccupancyEvent, hourly_occupancy

H0 = 1_800_000_000_000 // HOUR_MS * HOUR_MS
MIN = 60_000


def ev(minute: float, occupied: bool, room: str = "R1") -> OccupancyEvent:
    return OccupancyEvent(room, H0 + int(minute * MIN), occupied)


def test_a_session_across_an_hour_boundary() -> None:
    rows = hourly_occupancy([ev(40, True), ev(80, False)], H0, H0 + 2 * HOUR_MS, {})
    assert rows == [HourRollup("R1", H0, 20 * 60, 1),
                    HourRollup("R1", H0 + HOUR_MS, 20 * 60, 0)]


def test_state_before_the_window_and_refreshes() -> None:
    # Occupied since before the window; a 5-minute refresh repeats "occupied".
    rows = hourly_occupancy([ev(5, True), ev(30, False), ev(45, True), ev(50, True)],
                            H0, H0 + HOUR_MS, {"R1": True, "R2": False})
    assert rows == [HourRollup("R1", H0, (30 + 15) * 60, 1), HourRollup("R2", H0, 0, 0)]


def test_ranges_must_be_whole_hours() -> None:
    with pytest.raises(ValueError):
        hourly_occupancy([], H0 + 1, H0 + HOUR_MS, {})
