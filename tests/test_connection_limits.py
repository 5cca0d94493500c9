"""A flood of web connections cannot take the call path down: a server at
systemd's default `nofile` of 1,024, 2,000 held, half-sent and streaming
connections, and an emergency press. Real server, gateway and broker."""

from __future__ import annotations

import logging
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from server.connections import ACCEPT_BATCH, RateLimitFilter, connection_budget
from tests.support import ROOT, Device, DeviceFactory, Mosquitto, Proc, Services, wait_for
from tests.web_load import ConnectionFlood

NOFILE = 1024


class LimitedProc(Proc):
    """A `mamaroom` process started with RLIMIT_NOFILE soft = hard = NOFILE,
    as systemd starts a unit that sets no LimitNOFILE."""

    def start(self) -> Proc:
        log = self.log_path.open("ab")

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=limit,
        )
        log.close()
        return self


def test_a_press_is_acked_through_a_connection_flood(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, device_factory: DeviceFactory
) -> None:
    # This process holds 2,000 sockets itself.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_SERVER__HEADER_TIMEOUT_S="3",
        MAMAROOM_LOG__LEVEL="info",
    )
    svc.server = LimitedProc("server", ["server"], svc.env, tmp_path)
    svc.start()
    try:
        cap = connection_budget(NOFILE, 256)
        assert re.search(
            rf"fd_limit={NOFILE}\b.*max_connections={cap}\b", svc.server.log()
        ) or re.search(rf"max_connections={cap}\b.*fd_limit={NOFILE}\b", svc.server.log()), (
            svc.server.log_tail()
        )
        dev: Device = device_factory("dev-a")
        dev.occupancy(False)
        svc.wait_room_state("T1-0101", "free")
        with ConnectionFlood(svc.http_port, n=2000, addresses=20) as flood:
            held = len(flood.socks)
            dev.call("press", "flood-1")
            wait_for(
                lambda: "received" in dev.statuses("flood-1"),
                timeout=60,
                what="received during the flood",
                detail=svc.logs,
            )
            # Beyond the cap: a 503, then closed.
            seen = wait_for(
                lambda: (c := flood.poll())["refused"] > 0 and c,
                timeout=60,
                what="a 503 beyond the cap",
            )
            # Every half-sent request is closed by the header timeout; the silent
            # ones too; the streams (complete requests) stay, within the cap.
            seen = wait_for(
                lambda: (
                    c
                    if (c := flood.poll())["slowloris open"] == 0 and c["silent open"] == 0
                    else None
                ),
                timeout=60,
                what="half-sent and silent connections closed",
                detail=lambda: str(flood.poll()),
            )
            assert 0 < seen["stream open"] <= cap, seen
            dev.call("reset", "flood-1")
            wait_for(
                lambda: "resolved" in dev.statuses("flood-1"),
                timeout=60,
                what="resolved during the flood",
                detail=svc.logs,
            )
        assert held >= 1000, (held, flood.connect_failures)  # the flood was real
        # Once the flood is gone the server serves again, and the call is there.
        wait_for(
            lambda: svc.http.get("/readyz").status_code == 200,
            timeout=60,
            what="ready after the flood",
        )
        [alert] = [a for a in svc.admin("GET", "/api/alerts").json() if a["call_id"] == "flood-1"]
        assert alert["status"] == "resolved"
        # No log loop: the refusals are summed up, not logged one by one.
        log = svc.server.log()
        assert "out of system resource" not in log and "Too many open files" not in log
        assert len(log.encode()) < 1_000_000, len(log.encode())
        assert log.count("web connections refused or timed out") <= 20
    finally:
        svc.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_repeated_log_lines_are_rate_limited(caplog: Any) -> None:
    """What asyncio logs on every failed accept() at EMFILE goes through this."""
    logger = logging.getLogger("test.flood")
    logger.addFilter(RateLimitFilter(burst=5, interval_s=3600))
    with caplog.at_level(logging.ERROR, logger="test.flood"):
        for _ in range(ACCEPT_BATCH * 100):
            logger.error("socket.accept() out of system resource")
        logger.error("something else")
    assert [r.getMessage() for r in caplog.records] == [
        "socket.accept() out of system resource"
    ] * 5 + ["something else"]
