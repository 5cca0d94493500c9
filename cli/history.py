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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mamaroom.calendar import is_workday
from mamaroom.config import Settings
from mamaroom.contract import Call, Kind, Occupancy, RegistryRoom, Telemetry
from mamaroom.logs import get_logger
from mamaroom.storage import Record, refresh_rollups
from mamaroom.storage.influx import InfluxStore
from mamaroom.storage.rollups import DAY_MS, HOUR_MS, MINUTE_MS
from mamaroom.storage.sqlite import SqliteSeries
from mamaroom.storage.stores import open_stores
from server.history import HistoricCall

log = get_logger(__name__)

#: Expected new sessions per room per hour on a workday, by local hour.
WORKDAY_RATE = {
    7: 0.05,
    8: 0.25,
    9: 0.45,
    10: 0.7,
    11: 0.6,
    12: 0.8,
    13: 0.6,
    14: 0.5,
    15: 0.55,
    16: 0.45,
    17: 0.25,
    18: 0.1,
    19: 0.05,
}
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
#: Boots one run may use per node (a boot per outage: about 3 a year).
BOOTS_PER_RUN = 1 << 16


def history_boots(start_ms: int) -> tuple[int, int]:
    """The boots [first, end) of a run whose history starts at `start_ms`:
    above HISTORY_BOOT_BASE, and apart for runs that start at different
    minutes (the demo fills on from where the last run stopped), so one run
    never shares a (device, boot, seq) with another's either. The same
    start gives the same boots: running it again adds nothing."""
    first = HISTORY_BOOT_BASE + (start_ms // 60_000) * BOOTS_PER_RUN
    return first, first + BOOTS_PER_RUN


@dataclass
class NodeHistory:
    """One simulated node's past: its boots and message sequence."""

    room: RegistryRoom
    rng: random.Random
    boot: int = HISTORY_BOOT_BASE
    first_boot: int = HISTORY_BOOT_BASE
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


def _records_for_day(  # noqa: C901 (one pass over a day's events per record kind)
    node: NodeHistory,
    day: date,
    tz: ZoneInfo,
    telemetry_every_min: int,
    telemetry_from: date,
    window: tuple[int, int],
) -> Iterator[Record]:
    """The day's messages within `window` [start, end) ms: whole sessions and
    calls only (a session cut at the end would leave its room occupied)."""
    room, rng = node.room, node.rng
    w_start, w_end = window
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
            if not w_start <= begin < end < w_end:
                continue
            node.busy_until_ms = end
            events.append((begin, Kind.OCCUPANCY, {"occupied": True, "radar": "still"}))
            events.append((end, Kind.OCCUPANCY, {"occupied": False, "radar": "none"}))
            raised = begin + rng.randrange(max(1, end - begin))
            ack, arrive, resolve = _response_times(rng, raised)
            if (
                rng.random() < 1 / SESSIONS_PER_CALL
                and resolve < w_end
                and not any(node.down(t) for t in (raised, arrive, resolve))
            ):
                call_id = f"{room.device}-h{raised}"
                node.calls.append(
                    HistoricCall(room.id, room.device, call_id, raised, ack, arrive, resolve)
                )
                events.append((raised, Kind.CALL, {"action": "press", "call_id": call_id}))
                events.append((arrive, Kind.CALL, {"action": "presence", "call_id": call_id}))
                events.append((resolve, Kind.CALL, {"action": "reset", "call_id": call_id}))
    step = telemetry_every_min * 60_000
    first_tel = day_ms + rng.randrange(step)
    if day >= telemetry_from:  # older raw telemetry would fall to retention anyway
        for t_ms in range(
            max(first_tel, first_tel + -(-(w_start - first_tel) // step) * step),
            min(day_ms + 86_400_000, w_end),
            step,
        ):
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
            msg = Telemetry(
                uptime_s=max(0, (t_ms - node.uptime_start_ms) // 1000),
                rssi=rng.randint(-80, -50),
                heap_free=rng.randint(80_000, 95_000),
                fw="1.0.0",
                reset_reason="power_on" if node.boot > node.first_boot else None,
                **env,
            )
        yield Record(
            room.device, room.id, kind, msg, t_ms, building=room.building, floor=room.floor
        )


class OtherDataError(Exception):
    """The span to generate already holds messages of other boots: live
    nodes' (or another run's). Generated sessions would interleave with
    theirs in the same rooms and hours."""

    def __init__(self, first_ms: int, last_ms: int) -> None:
        super().__init__(f"the store holds other messages from {first_ms} to {last_ms}")
        self.first_ms, self.last_ms = first_ms, last_ms


def day_span(settings: Settings, days: int, end: date) -> tuple[int, int]:
    """[start, end) ms of `days` whole local days ending the day before `end`."""
    tz = ZoneInfo(settings.timezone)
    first = datetime.combine(end - timedelta(days=days), time(0), tz)
    return int(first.timestamp() * 1000), int(datetime.combine(end, time(0), tz).timestamp() * 1000)


async def generate(
    settings: Settings,
    rooms: list[RegistryRoom],
    *,
    days: int,
    end: date,
    backend: str,
    seed: int,
    telemetry_every_min: int,
    batch: int = 5000,
    show_progress: bool = True,
    calls: list[HistoricCall] | None = None,
    force: bool = False,
) -> dict[str, int]:
    """Write `days` of history ending the day before `end`; counts by kind.
    The emergency calls made are appended to `calls` (the server stores them
    as alerts: see the CLI). Raises OtherDataError when the span already
    holds messages of other boots, unless `force`."""
    start_ms, end_ms = day_span(settings, days, end)
    return await generate_span(
        settings,
        rooms,
        start_ms,
        end_ms,
        backend=backend,
        seed=seed,
        telemetry_every_min=telemetry_every_min,
        batch=batch,
        show_progress=show_progress,
        calls=calls,
        force=force,
    )


async def generate_span(
    settings: Settings,
    rooms: list[RegistryRoom],
    start_ms: int,
    end_ms: int,
    *,
    backend: str,
    seed: int,
    telemetry_every_min: int,
    batch: int = 5000,
    show_progress: bool = True,
    calls: list[HistoricCall] | None = None,
    force: bool = False,
    fill: bool = False,
    on_day: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write the history of [start_ms, end_ms): sessions and calls that fit
    in it whole, telemetry within it. `on_day(done, total)` after each day.
    `fill`: start after the last message the span already holds instead
    (the demo: its earlier runs' history and live data stay as they are)."""
    tz = ZoneInfo(settings.timezone)
    stores = open_stores(settings, gateway="history", backend=backend)
    store, influx = stores.series, stores.influx
    await stores.series_home.open()
    drainer = asyncio.create_task(influx.run_drainer()) if influx else None
    counts = {"occupancy": 0, "telemetry": 0, "call": 0, "duplicates": 0, "rollups": 0}
    try:
        if fill and (found := await store.data_times(start_ms, end_ms)) is not None:
            start_ms = found[1] + 1
        if end_ms - start_ms < MINUTE_MS:
            return counts
        boots = history_boots(start_ms)
        other = None if force else await store.data_times(start_ms, end_ms, boots)
        if other is not None:
            raise OtherDataError(*other)
        counts = await _write_history(
            store,
            settings,
            rooms,
            start_ms,
            end_ms,
            tz,
            boots[0],
            seed=seed,
            telemetry_every_min=telemetry_every_min,
            batch=batch,
            show_progress=show_progress,
            calls=calls,
            on_day=on_day,
            backend=backend,
        )
    finally:
        if drainer:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        await stores.series_home.close()
    log.info(
        "history written",
        backend=backend,
        start_ms=start_ms,
        end_ms=end_ms,
        rooms=len(rooms),
        **counts,
    )
    return counts


async def _write_history(
    store: SqliteSeries | InfluxStore,
    settings: Settings,
    rooms: list[RegistryRoom],
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo,
    first_boot: int,
    *,
    seed: int,
    telemetry_every_min: int,
    batch: int,
    show_progress: bool,
    calls: list[HistoricCall] | None,
    on_day: Callable[[int, int], None] | None,
    backend: str,
) -> dict[str, int]:
    rng = random.Random(seed)
    first_day = datetime.fromtimestamp(start_ms / 1000, tz).date()
    last_day = datetime.fromtimestamp((end_ms - 1) / 1000, tz).date()
    days = (last_day - first_day).days + 1
    telemetry_from = date.today() - timedelta(days=settings.storage.telemetry_retention_days - 1)
    nodes = [
        NodeHistory(
            r,
            random.Random(rng.random()),
            boot=first_boot,
            first_boot=first_boot,
            uptime_start_ms=start_ms,
        )
        for r in rooms
        if r.device
    ]
    counts = {"occupancy": 0, "telemetry": 0, "call": 0, "duplicates": 0, "rollups": 0}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task(f"history → {backend}", total=days)
        for offset in range(days):
            day = first_day + timedelta(days=offset)
            pending: list[Record] = []
            for node in nodes:
                pending.extend(
                    _records_for_day(
                        node, day, tz, telemetry_every_min, telemetry_from, (start_ms, end_ms)
                    )
                )
            for i in range(0, len(pending), batch):
                chunk = pending[i : i + batch]
                if isinstance(store, SqliteSeries):
                    fresh = await store.write(chunk, live=False)
                else:
                    fresh = await store.write(chunk)
                for rec, is_new in zip(chunk, fresh, strict=True):
                    counts[rec.kind.value if is_new else "duplicates"] += 1
            progress.update(task, advance=1, description=f"history → {backend} {day}")
            if on_day is not None:
                on_day(offset + 1, days)
        if isinstance(store, InfluxStore):
            drain = progress.add_task("sending the spool to InfluxDB", total=None)
            while (depth := (await store.stats()).depth) > 0:
                progress.update(drain, description=f"spool to InfluxDB: {depth} left")
                await asyncio.sleep(0.5)
        progress.add_task("hourly rollups", total=None)
        counts["rollups"] = await refresh_rollups(
            store, start_ms // HOUR_MS * HOUR_MS, end_ms // HOUR_MS * HOUR_MS
        )
    if calls is not None:
        calls.extend(c for node in nodes for c in node.calls)
    return counts


#: How far back `mamaroom demo` seeds its store, so its trends have weeks of
#: data from the first minute.
DEMO_HISTORY_DAYS = 28


async def seed_demo(
    settings: Settings, rooms: int, until_ms: int, say: Callable[[str], None]
) -> None:
    """The demo's past (see write_demo_history), written by a child process
    at low priority: generating it is seconds of CPU, and the demo's own
    process may be carrying the embedded broker. Its lines go to `say`;
    cancelling stops it."""
    import os
    import sys

    env = {**os.environ, "MAMAROOM_LOG__LEVEL": "warning"}
    # A session of its own: a Ctrl-C in the terminal is the demo's to handle
    # (it stops this child itself), not a KeyboardInterrupt mid-import here.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "history",
        "seed-demo",
        "--rooms",
        str(rooms),
        "--until-ms",
        str(until_ms),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        async for line in proc.stdout:
            say(line.decode(errors="replace").rstrip())
        if await proc.wait() != 0:
            say(
                f"history: not seeded (exit code {proc.returncode}); the trends show the "
                "live rooms only"
            )
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def write_demo_history(
    settings: Settings, rooms: int, until_ms: int, say: Callable[[str], None]
) -> None:
    """The demo's past: up to DEMO_HISTORY_DAYS before `until_ms` (when its
    live rooms started), from where the store's data ends (an earlier demo
    run), for its first `rooms` rooms with a node. Runs beside the live
    demo (boots apart, device health left alone), saying how far it got
    through `say`; a failure is said, not raised: the demo goes on."""
    from mamaroom.registry import read_rooms_csv
    from server.history import store_past_calls

    room_list = [r for r in read_rooms_csv(settings.rooms_csv) if r.device][:rooms]
    start_ms = until_ms - DEMO_HISTORY_DAYS * DAY_MS
    calls: list[HistoricCall] = []
    said = [0.0]

    def on_day(done: int, total: int) -> None:
        if done == total or done >= said[0] + total / 4:
            said[0] = done
            say(f"history: {done} of {total} days written")

    say(
        f"history: seeding up to {DEMO_HISTORY_DAYS} days before now for {len(room_list)} "
        "rooms in the background, so the trends have data"
    )
    try:
        counts = await generate_span(
            settings,
            room_list,
            start_ms,
            until_ms,
            backend=settings.storage.backend,
            seed=1,
            telemetry_every_min=30,
            batch=1000,
            show_progress=False,
            calls=calls,
            fill=True,
            on_day=on_day,
        )
        counts["alerts"] = await store_past_calls(settings, calls)
    except Exception as exc:  # the demo runs on without its past
        log.warning("demo history not seeded", error=repr(exc))
        say(f"history: not seeded ({exc}); the trends show the live rooms only")
        return
    if not counts["occupancy"] and not counts["telemetry"]:
        say("history: already there from an earlier run")
        return
    say(
        f"history: seeded {counts['occupancy'] // 2} sessions, {counts['telemetry']} "
        f"telemetry reports and {counts['alerts']} past calls"
    )
