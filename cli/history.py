"""`mamaroom history generate`: a realistic past, for trends work and benchmarks.

Occupancy follows working life in the park: busy on workdays with mid-morning,
lunch-time and mid-afternoon peaks, quiet at night, on weekends and on China's
public holidays (with the make-up workdays that move them), sessions of mostly
15-40 minutes. Nodes have the occasional outage (a gap in their messages,
then a reboot). Everything is written through the same storage protocol as
the gateway's, deduplicated on (device, boot, seq): running it twice with the
same seed adds nothing.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mamaroom.calendar import is_workday
from mamaroom.config import Settings
from mamaroom.contract import Call, Kind, Occupancy, RegistryRoom, Telemetry
from mamaroom.logs import get_logger
from mamaroom.storage import Record, RollupStore, Store, refresh_rollups
from mamaroom.storage.influx import InfluxStore
from mamaroom.storage.rollups import HOUR_MS
from mamaroom.storage.sqlite import SqliteStore
from server.history import HistoricCall

log = get_logger(__name__)

#: Expected new sessions per room per hour on a workday, by local hour.
WORKDAY_RATE = {7: 0.05, 8: 0.25, 9: 0.45, 10: 0.7, 11: 0.6, 12: 0.8, 13: 0.6, 14: 0.5,
                15: 0.55, 16: 0.45, 17: 0.25, 18: 0.1, 19: 0.05}
#: Weekends and public holidays: the park is nearly empty.
OFF_DAY_FACTOR = 0.06
OUTAGES_PER_ROOM_YEAR = 3.0
#: Emergency calls are rare: about one in this many sessions.
SESSIONS_PER_CALL = 400


def _response_times(rng: random.Random, raised: int) -> tuple[int, int, int]:
    """Staff acknowledge in about 40 s, walk over in about 2.5 min, and stay
    about 7 min; long tails, as in real nurse-call logs."""
    ack = raised + int(min(max(rng.lognormvariate(math.log(40), 0.6), 5), 600) * 1000)
    arrive = ack + int(min(max(rng.lognormvariate(math.log(150), 0.4), 30), 900) * 1000)
    resolve = arrive + int(min(max(rng.lognormvariate(math.log(420), 0.5), 60), 3600) * 1000)
    return ack, arrive, resolve


#: Generated boots count from here: far above any real or simulated node's
#: boot counter, so a history written beside a live demo never shares a
#: (device, boot, seq) with a live message (they collided: live rooms froze as
#: "duplicates"). The contract admits boots up to 2**63 - 1.
HISTORY_BOOT_BASE = 1 << 40


@dataclass
class NodeHistory:
    """One simulated node's past: its boots and message sequence."""

    room: RegistryRoom
    rng: random.Random
    boot: int = HISTORY_BOOT_BASE + 1
    seq: int = 0
    uptime_start_ms: int = 0
    busy_until_ms: int = 0
    outages: list[tuple[int, int]] = field(default_factory=list)
    calls: list[HistoricCall] = field(default_factory=list)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def down(self, t_ms: int) -> bool:
        return any(a <= t_ms < b for a, b in self.outages)


def _session_minutes(rng: random.Random) -> float:
    return min(max(rng.lognormvariate(math.log(25), 0.3), 8), 60)


def _records_for_day(node: NodeHistory, day: date, tz: ZoneInfo,
                     telemetry_every_min: int, telemetry_from: date) -> Iterator[Record]:
    room, rng = node.room, node.rng
    assert room.device is not None
    start = datetime.combine(day, time(0), tz)
    day_ms = int(start.timestamp() * 1000)
    factor = 1.0 if is_workday(day) else OFF_DAY_FACTOR
    events: list[tuple[int, Kind, dict[str, object]]] = []
    if rng.random() < OUTAGES_PER_ROOM_YEAR / 365:
        begin = day_ms + rng.randrange(86_400_000)
        node.outages.append((begin, begin + rng.randrange(600_000, 8 * 3_600_000)))
    for hour, rate in WORKDAY_RATE.items():
        # Poisson arrivals within the hour.
        t = 0.0
        while True:
            t += rng.expovariate(rate * factor) if rate * factor > 0 else 2.0
            if t >= 1.0:
                break
            begin = day_ms + int((hour + t) * 3_600_000)
            if begin < node.busy_until_ms or node.down(begin):
                continue  # the room is taken: she goes elsewhere
            end = begin + int(_session_minutes(rng) * 60_000)
            if node.down(end):
                continue  # keep the record simple: no session outlives its node
            node.busy_until_ms = end
            events.append((begin, Kind.OCCUPANCY, {"occupied": True, "radar": "still"}))
            events.append((end, Kind.OCCUPANCY, {"occupied": False, "radar": "none"}))
            raised = begin + rng.randrange(max(1, end - begin))
            ack, arrive, resolve = _response_times(rng, raised)
            if rng.random() < 1 / SESSIONS_PER_CALL and not any(
                    node.down(t) for t in (raised, arrive, resolve)):
                call_id = f"{room.device}-h{raised}"
                node.calls.append(HistoricCall(room.id, room.device, call_id, raised, ack,
                                               arrive, resolve))
                events.append((raised, Kind.CALL, {"action": "press", "call_id": call_id}))
                events.append((arrive, Kind.CALL, {"action": "presence", "call_id": call_id}))
                events.append((resolve, Kind.CALL, {"action": "reset", "call_id": call_id}))
    step = telemetry_every_min * 60_000
    first_tel = day_ms + rng.randrange(step)
    if day >= telemetry_from:  # older raw telemetry would fall to retention anyway
        for t_ms in range(first_tel, day_ms + 86_400_000, step):
            events.append((t_ms, Kind.TELEMETRY, {}))
    events.sort(key=lambda e: e[0])
    was_down = False
    for t_ms, kind, body in events:
        if node.down(t_ms):
            was_down = True
            continue  # the node is dark: nothing reaches the gateway
        if was_down:  # it came back: a new boot
            node.boot, node.seq, node.uptime_start_ms, was_down = node.boot + 1, 0, t_ms, False
        env = {"v": 1, "boot": node.boot, "seq": node.next_seq(), "ts": t_ms}
        msg: Occupancy | Telemetry | Call
        if kind is Kind.OCCUPANCY:
            msg = Occupancy(source="door", still_s=0, **env, **body)  # type: ignore[arg-type]
        elif kind is Kind.CALL:
            msg = Call(**env, **body)  # type: ignore[arg-type]
        else:
            msg = Telemetry(uptime_s=max(0, (t_ms - node.uptime_start_ms) // 1000),
                            rssi=rng.randint(-80, -50), heap_free=rng.randint(80_000, 95_000),
                            fw="1.0.0",
                            reset_reason="power_on" if node.boot > HISTORY_BOOT_BASE + 1
                            else None,
                            **env)
        yield Record(room.device, room.id, kind, msg, t_ms, building=room.building,
                     floor=room.floor)


async def generate(settings: Settings, rooms: list[RegistryRoom], *, days: int, end: date,
                   backend: str, seed: int, telemetry_every_min: int,
                   batch: int = 5000, show_progress: bool = True,
                   calls: list[HistoricCall] | None = None) -> dict[str, int]:
    """Write `days` of history ending the day before `end`; counts by kind.
    The emergency calls made are appended to `calls` (the server stores them
    as alerts: see the CLI)."""
    tz = ZoneInfo(settings.timezone)
    store: Store
    rollup_store: RollupStore
    influx: InfluxStore | None = None
    if backend == "influxdb":
        influx = InfluxStore(settings.storage.influxdb, settings.spool_path,
                             gateway="history",
                             telemetry_retention_days=settings.storage.telemetry_retention_days)
        store = rollup_store = influx
    else:
        store = rollup_store = SqliteStore(settings.store_path)
    await store.open()
    drainer = asyncio.create_task(influx.run_drainer()) if influx else None
    rng = random.Random(seed)
    first_day = end - timedelta(days=days)
    telemetry_from = date.today() - timedelta(days=settings.storage.telemetry_retention_days - 1)
    nodes = [NodeHistory(r, random.Random(rng.random()),
                         uptime_start_ms=int(datetime.combine(first_day, time(0), tz)
                                             .timestamp() * 1000))
             for r in rooms if r.device]
    counts = {"occupancy": 0, "telemetry": 0, "call": 0, "duplicates": 0, "rollups": 0}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), disable=not show_progress)
    try:
        with progress:
            task = progress.add_task(f"history → {backend}", total=days)
            for offset in range(days):
                day = first_day + timedelta(days=offset)
                pending: list[Record] = []
                for node in nodes:
                    pending.extend(_records_for_day(node, day, tz, telemetry_every_min,
                                                    telemetry_from))
                for i in range(0, len(pending), batch):
                    chunk = pending[i:i + batch]
                    fresh = await store.write(chunk)
                    for rec, is_new in zip(chunk, fresh, strict=True):
                        counts[rec.kind.value if is_new else "duplicates"] += 1
                progress.update(task, advance=1, description=f"history → {backend} {day}")
            if influx:
                drain = progress.add_task("sending the spool to InfluxDB", total=None)
                while (depth := (await influx.stats()).depth) > 0:
                    progress.update(drain, description=f"spool to InfluxDB: {depth} left")
                    await asyncio.sleep(0.5)
            progress.add_task("hourly rollups", total=None)
            start_ms = int(datetime.combine(first_day, time(0), tz).timestamp() * 1000)
            end_ms = int(datetime.combine(end, time(0), tz).timestamp() * 1000)
            counts["rollups"] = await refresh_rollups(
                rollup_store, start_ms // HOUR_MS * HOUR_MS, end_ms // HOUR_MS * HOUR_MS)
    finally:
        if drainer:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        await store.close()
    if calls is not None:
        calls.extend(c for node in nodes for c in node.calls)
    log.info("history written", backend=backend, days=days, rooms=len(nodes), **counts)
    return counts
