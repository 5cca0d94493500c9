"""`make bench`: every benchmark in bench/, results written to bench/RESULTS.md.

Each figure is printed beside a baseline measured in the same run on the same
machine (shared machines are noisy; ratios travel better than absolutes).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from bench import call_latency, ingest, login_storm, rooms_api, sse_fanout, sse_latency
from bench import firmware as firmware_bench
from bench import trends as trends_bench

RESULTS = Path(__file__).parent / "RESULTS.md"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller runs (a smoke test of the benchmarks themselves)",
    )
    args = parser.parse_args()
    sections = [
        sse_latency.main(["--changes", "200" if args.quick else "1000"]),
        sse_fanout.main(["--clients", "500", "--changes", "3"] if args.quick else []),
        rooms_api.main(["--seconds", "3"] if args.quick else []),
        call_latency.main(["--calls", "100" if args.quick else "1000"]),
        login_storm.main(["--calls", "60", "--rounds", "2"] if args.quick else []),
        ingest.main(
            ["--messages", "20000", "--rounds", "1", "--steady-rooms", "1000", "--steady-s", "10"]
            if args.quick
            else []
        ),
        trends_bench.main(["--days", "30", "--repeat", "2"] if args.quick else []),
        firmware_bench.main(["--publishes", "300", "--presses", "10"] if args.quick else []),
    ]
    # The long runs have their own targets and files; their latest results
    # belong in the one report too.
    for name, how in (
        ("RESULTS-chaos.md", "make chaos"),
        ("RESULTS-soak.md", "make soak"),
        ("RESULTS-embedded-broker.md", "python -m bench.embedded_broker"),
    ):
        path = RESULTS.parent / name
        if path.exists():
            body = path.read_text().split("\n", 1)[1] if "\n" in path.read_text() else ""
            sections.append(f"## From the latest `{how}` ({name})\n{body}")
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    RESULTS.write_text(
        f"# Benchmark results\n\nRun {stamp} with `make bench`.\n\n" + "\n".join(sections)
    )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
