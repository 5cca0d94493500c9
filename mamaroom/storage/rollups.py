"""Hourly occupancy rollups that mamaroom computes and writes itself.

Long ranges (a year of trends) read these instead of raw events: continuous
queries do not exist on InfluxDB 2.x's compatibility API or on 3.x, and the
embedded store has none. Pure functions here; each backend stores the rows.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class OccupancyEvent:
    room: str
    time_ms: int
    occupied: bool


@dataclass(frozen=True, slots=True)
class HourRollup:
    room: str
    hour_ms: int
    #: Seconds the room was occupied within the hour.
    occupied_s: float
    #: Sessions that started within the hour (a free → occupied change).
    sessions: int


def hourly_occupancy(
    events: Iterable[OccupancyEvent], start_ms: int, end_ms: int, before: dict[str, bool]
) -> list[HourRollup]:
    """Rollups for whole hours in [start_ms, end_ms) (both on hour boundaries).

    `events` are the occupancy events in the range; `before` is each room's
    state at `start_ms` (its last event earlier). Repeated reports of the same
    state (the 5-minute refresh) neither end nor start a session.
    """
    if start_ms % HOUR_MS or end_ms % HOUR_MS:
        raise ValueError("rollup ranges start and end on the hour")
    by_room: dict[str, list[OccupancyEvent]] = {}
    for e in events:
        by_room.setdefault(e.room, []).append(e)
    rows: list[HourRollup] = []
    for room in sorted(set(by_room) | set(before)):
        evs = sorted(by_room.get(room, []), key=lambda e: e.time_ms)
        state = before.get(room, False)
        i = 0
        for hour in range(start_ms, end_ms, HOUR_MS):
            hour_end = hour + HOUR_MS
            occupied_ms = 0
            sessions = 0
            cursor = hour
            while i < len(evs) and evs[i].time_ms < hour_end:
                e = evs[i]
                if state:
                    occupied_ms += e.time_ms - cursor
                if e.occupied and not state:
                    sessions += 1
                state, cursor = e.occupied, e.time_ms
                i += 1
            if state:
                occupied_ms += hour_end - cursor
            rows.append(HourRollup(room, hour, occupied_ms / 1000, sessions))
    return rows


#: Sessions of this many minutes or more are counted as this long.
MAX_SESSION_MIN = 600
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class SessionRollup:
    """How many completed sessions started in the hour lasted `minutes` whole
    minutes (rounded down, at most MAX_SESSION_MIN)."""

    room: str
    hour_ms: int
    minutes: int
    count: int


def session_lengths(
    events: Iterable[OccupancyEvent],
    start_ms: int,
    end_ms: int,
    before: dict[str, bool],
    horizon_ms: int,
) -> list[SessionRollup]:
    """Sessions that started in [start_ms, end_ms) and ended before `horizon_ms`,
    by start hour and length. `events` cover [start_ms, horizon_ms) (the
    events after `end_ms` are only read to find the ends). A session still
    going on at the horizon is left out (a later refresh counts it), unless
    it has already lasted MAX_SESSION_MIN; one going on at the window start
    began earlier and belongs to an earlier window."""
    if start_ms % HOUR_MS or end_ms % HOUR_MS:
        raise ValueError("rollup ranges start and end on the hour")
    by_room: dict[str, list[OccupancyEvent]] = {}
    for e in events:
        if start_ms <= e.time_ms < horizon_ms:
            by_room.setdefault(e.room, []).append(e)
    counts: dict[tuple[str, int, int], int] = {}
    for room, evs in by_room.items():
        evs.sort(key=lambda e: e.time_ms)
        state = before.get(room, False)
        began: int | None = None
        for e in evs:
            if e.occupied and not state and e.time_ms < end_ms:
                began = e.time_ms
            elif not e.occupied and state and began is not None:
                _count(counts, room, began, e.time_ms - began)
                began = None
            state = e.occupied
        if began is not None and horizon_ms - began >= MAX_SESSION_MIN * MINUTE_MS:
            _count(counts, room, began, horizon_ms - began)
    return [
        SessionRollup(room, hour, minutes, n) for (room, hour, minutes), n in sorted(counts.items())
    ]


def _count(counts: dict[tuple[str, int, int], int], room: str, began: int, length_ms: int) -> None:
    key = (room, began // HOUR_MS * HOUR_MS, min(length_ms // MINUTE_MS, MAX_SESSION_MIN))
    counts[key] = counts.get(key, 0) + 1


# --- coarse levels: what a year of trends reads ---------------------------
#
# A year of per-room hourly rows is 1.7 million points; InfluxDB 1.x takes
# seconds only to count them. The trends read these instead: per hour summed
# over every room, per room and UTC day, and session lengths per UTC day
# summed over every room (a range's partial days come from the hourly rows).

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SiteHourRollup:
    """One hour summed over every room that has rollups."""

    hour_ms: int
    occupied_s: float
    sessions: int


@dataclass(frozen=True, slots=True)
class DayRollup:
    """One room and UTC day [day_ms, day_ms + 1 day)."""

    room: str
    day_ms: int
    occupied_s: float
    sessions: int


@dataclass(frozen=True, slots=True)
class SiteSessionDay:
    """Sessions started in the UTC day, lasting `minutes`, over every room."""

    day_ms: int
    minutes: int
    count: int


@dataclass(frozen=True, slots=True)
class CoarseRollups:
    site_hours: list[SiteHourRollup]
    days: list[DayRollup]
    site_sessions: list[SiteSessionDay]


def coarse_rollups(
    hourly: Iterable[HourRollup],
    sessions: Iterable[SessionRollup],
    day_start_ms: int,
    day_end_ms: int,
) -> CoarseRollups:
    """The coarse rows of the UTC days [day_start, day_end), from every hourly
    and session row of those days. Sums run in (room, hour) order, so every
    backend gets the same floats."""
    if day_start_ms % DAY_MS or day_end_ms % DAY_MS:
        raise ValueError("coarse rollups cover whole UTC days")
    site: dict[int, list[float]] = {}
    days: dict[tuple[str, int], list[float]] = {}
    for r in sorted(hourly, key=lambda r: (r.room, r.hour_ms)):
        if not day_start_ms <= r.hour_ms < day_end_ms:
            continue
        s = site.setdefault(r.hour_ms, [0.0, 0])
        s[0] += r.occupied_s
        s[1] += r.sessions
        d = days.setdefault((r.room, r.hour_ms // DAY_MS * DAY_MS), [0.0, 0])
        d[0] += r.occupied_s
        d[1] += r.sessions
    lengths: dict[tuple[int, int], int] = {}
    for x in sessions:
        if day_start_ms <= x.hour_ms < day_end_ms:
            key = (x.hour_ms // DAY_MS * DAY_MS, x.minutes)
            lengths[key] = lengths.get(key, 0) + x.count
    return CoarseRollups(
        [SiteHourRollup(h, o, int(n)) for h, (o, n) in sorted(site.items())],
        [DayRollup(room, day, o, int(n)) for (room, day), (o, n) in sorted(days.items())],
        [SiteSessionDay(day, m, n) for (day, m), n in sorted(lengths.items())],
    )


@dataclass(frozen=True, slots=True)
class TelemetryHour:
    """A device's telemetry in one hour: its reports, the boots they came
    from, the time it counted as online (telemetry_hours) and its reboots."""

    device: str
    hour_ms: int
    points: int
    min_boot: int
    max_boot: int
    #: Milliseconds of the hour covered by gaps between reports that count as online.
    online_ms: int = 0
    #: Reports in the hour from another boot than the device's report before.
    reboots: int = 0


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    """One raw telemetry report: what the uptime rollup reads."""

    device: str
    time_ms: int
    boot: int


# --- device uptime from the gaps between telemetry reports ----------------
#
# A node reports every `telemetry_s` (60 s live; 1 s .. 1 h, set per node;
# the history generator writes every 30 min). Counting reports × one fixed
# interval gave a generated history 3.2 % uptime. Instead each gap between
# two reports of a device counts as online when it is at most GAP_FACTOR
# times the device's own interval there: the median of the gaps around it
# (GAP_NEIGHBOURS on each side). One outage is one long gap, so it cannot
# move that median; a node whose interval changes (a new telemetry_s, live
# data after a generated past) is judged by its new interval a few reports on.

GAP_FACTOR = 2.5
GAP_NEIGHBOURS = 5
#: Nodes report at least hourly (firmware telemetry_s <= 3600): a longer
#: median means the node was mostly away, not that it reports that rarely.
MAX_INTERVAL_MS = 3_600_000
#: Reports read before and after a rollup window: the neighbours of its
#: first and last gaps at the longest interval.
TELEMETRY_CONTEXT_MS = (GAP_NEIGHBOURS + 1) * MAX_INTERVAL_MS


def _local_medians(gaps: list[int]) -> list[float]:
    """For each gap, the median of it and its GAP_NEIGHBOURS neighbours on
    each side (fewer at the ends), by a sorted sliding window."""
    k = GAP_NEIGHBOURS
    n = len(gaps)
    window = sorted(gaps[: min(k, n)])
    out: list[float] = []
    for i in range(n):
        if i + k < n:
            bisect.insort(window, gaps[i + k])
        if i - k - 1 >= 0:
            del window[bisect.bisect_left(window, gaps[i - k - 1])]
        m = len(window)
        out.append(window[m // 2] if m % 2 else (window[m // 2 - 1] + window[m // 2]) / 2)
    return out


def telemetry_hours(
    reports: Iterable[TelemetryReport], start_ms: int, end_ms: int
) -> list[TelemetryHour]:
    """The telemetry rollup of the whole hours in [start_ms, end_ms).

    `reports` should cover TELEMETRY_CONTEXT_MS before and after the window
    (the gaps crossing its edges, and their neighbours). The time between
    two consecutive reports counts as online, in the hours it spans, when
    the gap is at most GAP_FACTOR × the local median gap (at most
    MAX_INTERVAL_MS). The time after a device's last report is not counted
    until the next one arrives (a later refresh). Rows for every device and
    hour with a report or online time, in (device, hour) order."""
    if start_ms % HOUR_MS or end_ms % HOUR_MS:
        raise ValueError("rollup ranges start and end on the hour")
    by_device: dict[str, list[tuple[int, int]]] = {}
    for r in reports:
        by_device.setdefault(r.device, []).append((r.time_ms, r.boot))
    rows: list[TelemetryHour] = []
    for device in sorted(by_device):
        seen = sorted(by_device[device])
        times = [t for t, _ in seen]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        medians = _local_medians(gaps)
        # hour -> [points, min_boot, max_boot, online_ms, reboots]
        hours: dict[int, list[int]] = {}
        for i, (t, boot) in enumerate(seen):
            if start_ms <= t < end_ms:
                row = hours.setdefault(t // HOUR_MS * HOUR_MS, [0, boot, boot, 0, 0])
                row[0] += 1
                row[1], row[2] = min(row[1], boot), max(row[2], boot)
                if i and seen[i - 1][1] != boot:
                    row[4] += 1
            if not i:
                continue
            a, b = max(times[i - 1], start_ms), min(t, end_ms)
            if a >= b or gaps[i - 1] > GAP_FACTOR * min(medians[i - 1], MAX_INTERVAL_MS):
                continue
            while a < b:  # split the gap at the hours it crosses
                hour = a // HOUR_MS * HOUR_MS
                upto = min(b, hour + HOUR_MS)
                hours.setdefault(hour, [0, boot, boot, 0, 0])[3] += upto - a
                a = upto
        rows += [TelemetryHour(device, hour, *row) for hour, row in sorted(hours.items())]
    return rows
