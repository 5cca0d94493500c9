"""`GET /api/rooms` requests per second, beside a bare Starlette JSON endpoint.

The real server (190 rooms from site/rooms.csv, gateway and broker running)
and, in the same run on the same machine, a bare Starlette app under the same
uvicorn serving the same JSON bytes from memory: the ceiling of the stack, so
the ratio shows what mamaroom's own work costs. Load from `wrk` (Debian's
package), which is not Python and so not what is measured.

    python -m bench.rooms_api [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
import psutil
from rich.console import Console

from bench.ingest import cpu_s, machine
from tests.support import ROOT, Mosquitto, Services, free_port, wait_for

console = Console()

BARE_APP = textwrap.dedent("""
    import sys
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    body = open(sys.argv[1], "rb").read()
    async def rooms(request):
        return Response(body, media_type="application/json")
    app = Starlette(routes=[Route("/api/rooms", rooms)])
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def wrk(
    url: str, seconds: int, connections: int, server: psutil.Process
) -> tuple[float, float, float]:
    """(requests per second, p99 latency ms, server CPU µs per request) from wrk.
    CPU per request is the steadier figure on a shared machine (as in ingest.py)."""
    cpu0 = cpu_s(server)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_s(server) - cpu0
    done = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert done and rate, f"wrk's output without its totals:\n{out}"
    requests, rps = int(done.group(1)), float(rate.group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses")
    return rps, p99, cpu / requests * 1e6


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rooms_api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        subprocess.run([str(ROOT / "scripts" / "ensure-system-packages.sh"), "wrk"], check=True)
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "broker").start()
        svc = Services(broker, root, ROOT / "site" / "rooms.csv", MAMAROOM_LOG__LEVEL="warning")
        bare = None
        try:
            svc.start()
            body = httpx.get(f"{svc.base_url}/api/rooms", timeout=10).content
            (root / "rooms.json").write_bytes(body)
            port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE_APP, str(root / "rooms.json"), str(port)]
            )
            bare_url = f"http://127.0.0.1:{port}/api/rooms"
            wait_for(
                lambda: httpx.get(bare_url, timeout=2).status_code == 200,
                timeout=30,
                what="the bare Starlette app",
            )
            assert svc.server.proc is not None
            procs = {
                "bare": psutil.Process(bare.pid),
                "mamaroom": psutil.Process(svc.server.proc.pid),
            }
            runs: dict[str, list[tuple[float, float, float]]] = {}
            # Interleaved, twice each: the machine's load changes under us.
            for name, url in (
                ("bare", bare_url),
                ("mamaroom", f"{svc.base_url}/api/rooms"),
                ("bare", bare_url),
                ("mamaroom", f"{svc.base_url}/api/rooms"),
            ):
                console.print(f"wrk {args.seconds} s against {name} …")
                runs.setdefault(name, []).append(
                    wrk(url, args.seconds, args.connections, procs[name])
                )
        finally:
            if bare:
                bare.terminate()
                bare.wait(10)
            svc.stop()
            broker.stop()
    b_rps = max(r[0] for r in runs["bare"])
    m_rps = max(r[0] for r in runs["mamaroom"])
    b_p99 = min(r[1] for r in runs["bare"])
    m_p99 = min(r[1] for r in runs["mamaroom"])
    b_cpu = min(r[2] for r in runs["bare"])
    m_cpu = min(r[2] for r in runs["mamaroom"])
    console.print(
        f"bare {b_rps:.0f} req/s, mamaroom {m_rps:.0f} req/s "
        f"({m_rps / b_rps:.0%} of bare); {len(body)} bytes per response; server CPU "
        f"per request: bare {b_cpu:.0f} µs, mamaroom {m_cpu:.0f} µs"
    )
    return "\n".join(
        [
            "## GET /api/rooms throughput",
            "",
            f"Machine: {machine()}. wrk, 2 threads, {args.connections} connections, "
            f"{args.seconds} s per run, best of two interleaved runs each. 190 rooms "
            f"({len(body):,} bytes of JSON). Baseline: a bare Starlette app under the same uvicorn "
            "serving the same bytes from memory. CPU: the server process's user + system time "
            "per request (the lower of the two runs).",
            "",
            "| endpoint | req/s | p99 ms | ratio to bare | CPU µs/req | bare CPU / its CPU |",
            "|---|---|---|---|---|---|",
            f"| bare Starlette (baseline) | {b_rps:,.0f} | {b_p99:.1f} | 1 | {b_cpu:.0f} | 1 |",
            f"| mamaroom `GET /api/rooms` | {m_rps:,.0f} | {m_p99:.1f} | {m_rps / b_rps:.2f} | "
            f"{m_cpu:.0f} | {b_cpu / m_cpu:.2f} |",
            "",
        ]
    )


if __name__ == "__main__":
    print(main())
