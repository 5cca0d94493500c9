"""Hourly occupancy and telemetry rollups, computed by mamaroom itself."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mamaroom.storage.rollups import (
    HOUR_MS,
    HourRollup,
    OccupancyEvent,
    TelemetryHour,
    TelemetryReport,
    hourly_occupancy,
    telemetry_hours,
)

H0 = 1_800_000_000_000 // HOUR_MS * HOUR_MS
MIN = 60_000


def ev(minute: float, occupied: bool, room: str = "R1") -> OccupancyEvent:
    return OccupancyEvent(room, H0 + int(minute * MIN), occupied)


def test_a_session_across_an_hour_boundary() -> None:
    rows = hourly_occupancy([ev(40, True), ev(80, False)], H0, H0 + 2 * HOUR_MS, {})
    assert rows == [HourRollup("R1", H0, 20 * 60, 1), HourRollup("R1", H0 + HOUR_MS, 20 * 60, 0)]


def test_state_before_the_window_and_refreshes() -> None:
    # Occupied since before the window; a 5-minute refresh repeats "occupied".
    rows = hourly_occupancy(
        [ev(5, True), ev(30, False), ev(45, True), ev(50, True)],
        H0,
        H0 + HOUR_MS,
        {"R1": True, "R2": False},
    )
    assert rows == [HourRollup("R1", H0, (30 + 15) * 60, 1), HourRollup("R2", H0, 0, 0)]


def test_ranges_must_be_whole_hours() -> None:
    with pytest.raises(ValueError):
        hourly_occupancy([], H0 + 1, H0 + HOUR_MS, {})


# --- device uptime from the gaps between telemetry reports -----------------


def reports(minutes: Sequence[float], device: str = "n1", boot: int = 1) -> list[TelemetryReport]:
    return [TelemetryReport(device, H0 + int(m * MIN), boot) for m in minutes]


def online_min(rows: list[TelemetryHour]) -> float:
    return sum(r.online_ms for r in rows) / MIN


def test_gaps_count_as_online_by_the_nodes_own_interval() -> None:
    # Every 30 minutes for 10 hours: the 3.2 % that "reports x 60 s" made of
    # generated history is the whole 10 hours here.
    half_hourly = reports([30 * k for k in range(21)])
    rows = telemetry_hours(half_hourly, H0, H0 + 10 * HOUR_MS)
    assert online_min(rows) == 600
    assert [r.points for r in rows] == [2] * 10 and all(r.online_ms == HOUR_MS for r in rows)
    # Every minute: the same; a 4-minute gap is more than 2.5 times it.
    minutely = reports([m for m in range(61) if m not in (20, 21, 22)])
    rows = telemetry_hours(minutely, H0, H0 + HOUR_MS)
    assert online_min(rows) == 60 - 4 and rows[0].points == 57
    # Up to 2.5 times counts: two missed half-hourly reports do not (90 minutes).
    assert (
        online_min(telemetry_hours(reports([0, 30, 60, 135, 165, 195, 225]), H0, H0 + 4 * HOUR_MS))
        == 225
    )
    assert (
        online_min(telemetry_hours(reports([0, 30, 60, 150, 180, 210, 240]), H0, H0 + 4 * HOUR_MS))
        == 240 - 90
    )


def test_an_interval_that_changes_is_followed() -> None:
    """Generated history every 30 minutes, then a live node every minute
    (the demo): both count in full, and so does the gap between them."""
    past = [30 * k for k in range(13)]  # 00:00 .. 06:00
    live = [360 + m for m in range(1, 121)]  # 06:01 .. 08:00
    rows = telemetry_hours(reports(past) + reports(live, boot=2), H0, H0 + 8 * HOUR_MS)
    assert online_min(rows) == 480
    assert sum(r.reboots for r in rows) == 1  # the live node's boot
    # A node that reports a few times a day is not "online" in between: the
    # interval is at most an hour (firmware telemetry_s <= 3600).
    rare = reports([0, 300, 600, 900, 1200, 1500])
    assert online_min(telemetry_hours(rare, H0, H0 + 25 * HOUR_MS)) == 0


def test_gaps_split_at_hours_and_at_the_window() -> None:
    # 50 min, 70 min, 90 min: one node every 20 minutes, read with context.
    rows = telemetry_hours(reports([-10, 10, 30, 50, 70, 90, 110, 130]), H0, H0 + 2 * HOUR_MS)
    # The gap 23:50 -> 00:10 counts 10 minutes in hour 0; 01:50 -> 02:10 10 in hour 1.
    assert [(r.hour_ms, r.points, r.online_ms) for r in rows] == [
        (H0, 3, HOUR_MS),
        (H0 + HOUR_MS, 3, HOUR_MS),
    ]
    # An hour without a report inside a gap that counts: a row with no points.
    rows = telemetry_hours(reports([0, 40, 80, 120, 160, 200, 240, 280]), H0, H0 + 4 * HOUR_MS)
    assert [(r.points, r.online_ms // MIN) for r in rows] == [(2, 60), (1, 60), (2, 60), (1, 60)]
    # After the last report nothing counts (until the next one arrives).
    assert online_min(telemetry_hours(reports([0, 1, 2]), H0, H0 + HOUR_MS)) == 2


def test_reboots_are_boot_changes_not_boot_numbers() -> None:
    """Generated history's boots start at 2**40: highest - lowest would read
    as a trillion reboots next to a live node's boot 3."""
    mixed = reports([0, 1, 2], boot=(1 << 40) + 1) + reports([3, 4], boot=3) + reports([5], boot=4)
    rows = telemetry_hours(mixed, H0, H0 + HOUR_MS)
    assert rows == [TelemetryHour("n1", H0, 6, 3, (1 << 40) + 1, 5 * MIN, 2)]
    # A boot change at the window's first report counts against the report before it.
    assert (
        telemetry_hours(reports([-1], boot=1) + reports([1], boot=2), H0, H0 + HOUR_MS)[0].reboots
        == 1
    )
    with pytest.raises(ValueError):
        telemetry_hours([], H0 + 1, H0 + HOUR_MS)
