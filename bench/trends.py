"""Trends over a year × 190 rooms on both backends (target ≤ 500 ms each).

Method: `mamaroom history generate` writes the same year (same seed, the 190
rooms of site/rooms.csv) into SQLite and into a private InfluxDB 1.x (Debian's
influxd), through the gateway's write path, with the hourly and
session-length rollups. Then each trend of the trends service
(server/services/trends.py, what the API answers) is timed over the whole
year, median of `--repeat` runs. Baseline, in the same run and on the same
data: a plain count of the year's hourly rollup rows on that backend (the
least any rollup query costs there).

    python -m bench.trends [--days 365] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.encoders import jsonable_encoder
from rich.console import Console
from rich.table import Table

from bench.ingest import machine
from mamaroom.config import Settings
from mamaroom.registry import read_rooms_csv
from mamaroom.storage.embedded import EmbeddedStore
from mamaroom.storage.influx import InfluxStore
from mamaroom.storage.sqlite import SqliteSeries
from server.services.trends import CallsDb, TrendsService
from tests.support import ROOT, InfluxDB

console = Console()
TZ = ZoneInfo("Asia/Shanghai")
TARGET_MS = 500


def generate(data_dir: Path, backend: str, days: int, influx: InfluxDB) -> float:
    env = {
        **os.environ,
        "MAMAROOM_DATA_DIR": str(data_dir),
        "MAMAROOM_LOG__LEVEL": "warning",
        "MAMAROOM_STORAGE__INFLUXDB__URL": influx.url,
        "MAMAROOM_STORAGE__INFLUXDB__DATABASE": "bench",
        # The generator's one year-long rollup refresh reads every event at once.
        "MAMAROOM_STORAGE__INFLUXDB__TIMEOUT_S": "300",
    }
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "history",
            "generate",
            "--days",
            str(days),
            "--rooms",
            "190",
            "--backend",
            backend,
        ],
        env=env,
        cwd=data_dir.parent,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await fn()  # warm: caches, connections
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


#: Each trend's answer over the year, per backend, for the parity check.
ANSWERS: dict[str, dict[str, str]] = {}


async def measure_backend(
    root: Path, influx: InfluxDB, backend: str, days: int, repeat: int
) -> dict[str, float]:
    rooms = read_rooms_csv(ROOT / "site" / "rooms.csv")
    today = datetime.now(TZ).date()
    settings = Settings(
        data_dir=root / backend,
        storage={
            "backend": backend,
            "influxdb": {"url": influx.url, "database": "bench", "timeout_s": 120},
        },
    )
    store: SqliteSeries | InfluxStore
    embedded = EmbeddedStore(settings.store_path)
    if backend == "sqlite":
        await embedded.open()
        store = embedded.series
    else:
        store = InfluxStore(settings.storage.influxdb, settings.spool_path, gateway="bench")
    calls = CallsDb(settings.server_db_path)
    await calls.open()
    svc = TrendsService(settings, store, calls, lambda: rooms)
    rng = svc.range(today - timedelta(days=days), today - timedelta(days=1))

    async def baseline() -> None:
        if isinstance(store, SqliteSeries):
            await store._run(
                lambda db: db.execute(
                    "SELECT COUNT(*) FROM occupancy_hourly WHERE hour_ms >= ? AND hour_ms < ?",
                    (rng.start_ms, rng.end_ms),
                ).fetchone()
            )
        else:
            await store.client.query(
                f'SELECT count("sessions") FROM "occupancy_hourly" WHERE time >= '
                f"{rng.start_ms}ms AND time < {rng.end_ms}ms"
            )

    trends: dict[str, Callable[[], Awaitable[Any]]] = {
        "baseline: count of the range's hourly rollups": baseline,
        "heatmap": lambda: svc.heatmap(rng),
        "rooms": lambda: svc.rooms_ranked(rng),
        "sessions": lambda: svc.sessions(rng),
        "calls": lambda: svc.calls(rng),
        "uptime": lambda: svc.uptime(rng),
    }
    try:
        times = {name: await timed(fn, repeat) for name, fn in trends.items()}
        # The year's answers, as the API would serialise them: the parity check.
        ANSWERS[backend] = {
            name: json.dumps(jsonable_encoder(await fn()), sort_keys=True)
            for name, fn in trends.items()
            if not name.startswith("baseline")
        }
        return times
    finally:
        await calls.close()
        if isinstance(store, InfluxStore):
            await store.client.close()
        else:
            await embedded.close()


async def measure(
    root: Path, influx: InfluxDB, days: int, repeat: int
) -> dict[str, dict[str, float]]:
    return {b: await measure_backend(root, influx, b, days, repeat) for b in ("sqlite", "influxdb")}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.trends",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", type=int, default=365, help="days of history (default 365)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per trend")
    parser.add_argument("--keep", type=Path, help="keep (or reuse) the generated data here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        influx = InfluxDB(root / "influxd").start()
        try:
            took = {}
            for backend in ("sqlite", "influxdb"):
                if not (root / backend).exists():
                    (root / backend).mkdir()
                    console.print(f"generating {args.days} days × 190 rooms into {backend} …")
                    took[backend] = generate(root / backend, backend, args.days, influx)
            results = asyncio.run(measure(root, influx, args.days, args.repeat))
        finally:
            influx.stop()
    names = list(results["sqlite"])
    table = Table(title=f"Trends over {args.days} days × 190 rooms, median of {args.repeat} (ms)")
    for col in ("trend", "SQLite", "× baseline", "InfluxDB", "× baseline"):
        table.add_column(col)
    lines = [
        "## Trends: a year × 190 rooms",
        "",
        f"Machine: {machine()}. `mamaroom history generate --days {args.days} --rooms 190` "
        "into each backend, then each trend of the trends service timed over the whole "
        f"range (median of {args.repeat}; target ≤ {TARGET_MS} ms). Baseline: a plain count "
        "of the range's hourly rollup rows on the same backend. Uptime reads the hourly "
        "telemetry rollup of the last 30 days (raw telemetry's retention).",
        "",
        "| trend | SQLite ms | × baseline | InfluxDB ms | × baseline |",
        "|---|---|---|---|---|",
    ]
    base = {b: results[b][names[0]] for b in results}
    for name in names:
        s, i = results["sqlite"][name], results["influxdb"][name]
        row = [
            name,
            f"{s:.1f}",
            f"{s / base['sqlite']:.1f}",
            f"{i:.1f}",
            f"{i / base['influxdb']:.1f}",
        ]
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    if took:
        gen = ", ".join(f"{b} {s:.0f} s" for b, s in took.items())
        console.print(f"generation took {gen}")
        lines += ["", f"Generating the history took {gen}."]
    differ = [
        n
        for n in ANSWERS.get("sqlite", {})
        if ANSWERS["sqlite"][n] != ANSWERS.get("influxdb", {}).get(n)
    ]
    parity = (
        "identical on both backends"
        if not differ
        else f"DIFFERENT on the two backends: {', '.join(differ)}"
    )
    console.print(f"parity over {args.days} days: {parity}")
    lines += [
        "",
        f"Parity over the {args.days} days: every trend's answer (as JSON) is {parity}."
        if not differ
        else f"Parity over the {args.days} days: {parity}.",
    ]
    over = [f"{b} {n}" for b in results for n in names[1:] if results[b][n] > TARGET_MS]
    lines += ["", f"Over the {TARGET_MS} ms target: {', '.join(over) or 'none'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
