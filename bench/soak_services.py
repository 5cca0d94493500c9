"""Soak (issue 7, item 7): an accelerated day of the whole park, with the
gateway's and the server's memory and open files watched.

190 simulated rooms (`mamaroom simulate`, the demo's population: sessions
and gaps compressed by `--speed`, so an hour of wall time is about a day of
use) with emergency calls; a staff console that acknowledges every open call
through the API; a mother's phone polling `GET /api/rooms`; a staff SSE
stream open all along. Every `--sample-s` the resident memory (RSS) and the
open file descriptors of the gateway and the server are sampled.

Pass: after the warm-up (the first `--warmup` fraction of the run), RSS grows
by at most `--rss-growth` (fraction) + 10 MB and the open files by at most 5;
both processes are still alive; no call was left unacknowledged for long.
Results go to bench/RESULTS-soak.md (the figures for bench/RESULTS.md).

    python -m bench.soak_services [--minutes 60] [--rooms 190] [--speed 24]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import psutil

from tests.support import ROOT, Mosquitto, Proc, Services, sse_events, wait_for

RESULTS = Path(__file__).parent / "RESULTS-soak.md"


@dataclass
class Series:
    name: str
    pid: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss, fds)

    def sample(self, t: float) -> None:
        p = psutil.Process(self.pid)
        self.samples.append((t, p.memory_info().rss, p.num_fds()))

    def after(self, t0: float) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if s[0] >= t0]


@dataclass
class Staff:
    """Acknowledges open calls like a console user; keeps what it saw."""

    svc: Services
    acked: int = 0
    errors: int = 0
    slowest_open_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(5):
            try:
                r = self.svc.admin("GET", "/api/alerts", params={"kind": "call", "status": "open"})
                r.raise_for_status()
                now_ms = time.time() * 1000
                for alert in r.json():
                    self.slowest_open_s = max(
                        self.slowest_open_s, (now_ms - alert["raised_at_ms"]) / 1000
                    )
                    self.svc.admin("POST", f"/api/alerts/{alert['id']}/ack").raise_for_status()
                    self.acked += 1
            except httpx.HTTPError:
                self.errors += 1


def poll_rooms(base_url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        while not stop.wait(2):
            try:
                http.get("/api/rooms").raise_for_status()
                counts["rooms_ok"] += 1
            except httpx.HTTPError:
                counts["rooms_err"] += 1


def follow_stream(url: str, token: str, stop: threading.Event, counts: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            for _event, _data in sse_events(url, {"Authorization": f"Bearer {token}"}, timeout=60):
                counts["sse_events"] += 1
                if stop.is_set():
                    return
        except httpx.HTTPError:
            counts["sse_reconnects"] += 1
            stop.wait(1)


def verdict(series: Series, t_warm: float, rss_growth: float) -> tuple[bool, str]:
    after = series.after(t_warm)
    if len(after) < 2:
        return False, f"| {series.name} | too few samples | | | | | no |"
    rss0, rss_end = after[0][1], after[-1][1]
    rss_max = max(s[1] for s in after)
    fd0, fd_max = after[0][2], max(s[2] for s in after)
    # Least-squares slope of RSS after the warm-up, in MB per hour.
    n = len(after)
    mt = sum(s[0] for s in after) / n
    mr = sum(s[1] for s in after) / n
    var = sum((s[0] - mt) ** 2 for s in after) or 1.0
    slope = sum((s[0] - mt) * (s[1] - mr) for s in after) / var * 3600 / 2**20
    ok = (rss_max - rss0 <= rss0 * rss_growth + 10 * 2**20) and fd_max - fd0 <= 5
    mb = 2**20
    return ok, (
        f"| {series.name} | {rss0 / mb:.1f} → {rss_end / mb:.1f} (max {rss_max / mb:.1f})"
        f" | {slope:+.1f} | {fd0} → {after[-1][2]} (max {fd_max}) | "
        f"{'yes' if ok else 'NO'} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak_services", description=__doc__.splitlines()[0]
    )
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--rooms", type=int, default=190)
    p.add_argument(
        "--speed",
        type=float,
        default=24.0,
        help="time compression of the rooms' use (24: an hour is a day)",
    )
    p.add_argument(
        "--call-every",
        type=float,
        default=24.0,
        help="mean hours between calls per room, simulated time",
    )
    p.add_argument(
        "--busy-hour",
        type=int,
        default=10,
        help="the rooms' local hour at the start (the simulator weights use by "
        "its clock's hour; 10 is the late-morning peak)",
    )
    p.add_argument("--sample-s", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the run")
    p.add_argument(
        "--rss-growth",
        type=float,
        default=0.10,
        help="allowed RSS growth after warm-up, fraction (plus 10 MB)",
    )
    args = p.parse_args(argv)

    with TemporaryDirectory(prefix="mamaroom-soak-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto", persistence=True).start()
        svc = Services(
            broker, work, ROOT / "site" / "rooms.csv", MAMAROOM_LOG__LEVEL="warning"
        ).start()
        # The simulator's hour weights follow its own clock's hour: give it a
        # time zone where that hour is now the busy hour (only the simulator).
        offset = (args.busy_hour - time.gmtime().tm_hour) % 24
        offset = offset - 24 if offset > 14 else offset
        sim_env = {**svc.env, "MAMAROOM_TIMEZONE": f"Etc/GMT{-offset:+d}"}
        sim = Proc(
            "simulate",
            [
                "simulate",
                "--rooms",
                str(args.rooms),
                "--speed",
                str(args.speed),
                "--call-every",
                str(args.call_every),
                "--seed",
                "7",
            ],
            sim_env,
            work,
        ).start()
        gateway, server = svc.gateway.proc, svc.server.proc
        assert gateway is not None and server is not None  # started just above
        series = [Series("gateway", gateway.pid), Series("server", server.pid)]
        stop = threading.Event()
        counts = {"rooms_ok": 0, "rooms_err": 0, "sse_events": 0, "sse_reconnects": 0}
        staff = Staff(svc, stop=stop)
        token = svc.login("admin", svc.ADMIN_PASSWORD)
        threads = [
            threading.Thread(target=staff.run, daemon=True),
            threading.Thread(target=poll_rooms, args=(svc.base_url, stop, counts), daemon=True),
            threading.Thread(
                target=follow_stream,
                args=(f"{svc.base_url}/api/stream", token, stop, counts),
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        t_warm = started + args.minutes * 60 * args.warmup
        alive = True
        try:
            wait_for(
                lambda: svc.room("SP1-0101")["state"] != "offline" or None,
                timeout=120,
                what="the simulated rooms reporting",
            )
            while time.monotonic() < end:
                now = time.monotonic()
                for s in series:
                    s.sample(now)
                alive = svc.gateway.alive() and svc.server.alive() and sim.alive()
                if not alive:
                    break
                elapsed = (now - started) / 60
                g, srv = series[0].samples[-1], series[1].samples[-1]
                print(
                    f"{elapsed:5.1f} min  gateway {g[1] / 2**20:6.1f} MB {g[2]:3d} fds   "
                    f"server {srv[1] / 2**20:6.1f} MB {srv[2]:3d} fds   calls acked "
                    f"{staff.acked}",
                    flush=True,
                )
                time.sleep(args.sample_s)
            metrics = svc.metrics()
        finally:
            stop.set()
            sim.stop()
            svc.stop()
            broker.stop()

    rows = [verdict(s, t_warm, args.rss_growth) for s in series]
    ok = alive and all(r[0] for r in rows) and counts["rooms_err"] == 0
    stored = sum(v for k, v in metrics.items() if k.startswith("mamaroom_gateway_stored_total"))
    text = "\n".join(
        [
            "# Soak: gateway and server, an accelerated day",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
            f"({os.cpu_count()} cores, shared; Python {platform.python_version()}), "
            f"`python -m bench.soak_services --minutes {args.minutes:g} --rooms {args.rooms} "
            f"--speed {args.speed:g} --call-every {args.call_every:g}`.",
            f"{args.rooms} simulated rooms at {args.speed:g}× "
            f"(≈ {args.minutes * args.speed / 60:.0f}"
            " h of use, at the rooms' late-morning rate from the simulator's hour weights "
            f"for {args.busy_hour}:00 on; it does not cycle through a day's hours), "
            "embedded SQLite storage, a staff console acknowledging every call, "
            "a phone polling `GET /api/rooms` every 2 s, one staff SSE stream. Samples every "
            f"{args.sample_s:g} s; warm-up {args.warmup:.0%} of the run.",
            "",
            "| process | RSS after warm-up → end, MB | RSS slope, MB/h "
            "| open fds after warm-up → end"
            " | flat |",
            "|---|---|---|---|---|",
            *[r[1] for r in rows],
            "",
            f"- Messages stored: {stored:.0f}; calls acknowledged by the console: {staff.acked}; "
            f"longest a call waited open for the console: {staff.slowest_open_s:.1f} s.",
            f"- `GET /api/rooms`: {counts['rooms_ok']} ok, {counts['rooms_err']} failed; SSE "
            f"events: {counts['sse_events']}, stream reconnects: {counts['sse_reconnects']}.",
            f"- All processes alive to the end: {'yes' if alive else 'NO'}. "
            f"Verdict: {'PASS' if ok else 'FAIL'} (RSS growth ≤ {args.rss_growth:.0%} + 10 MB, "
            "open files ≤ +5, after warm-up).",
            "",
        ]
    )
    print("\n" + text)
    RESULTS.write_text(text, encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
