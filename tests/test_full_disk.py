"""A full data disk, injected into real processes: the data directory is a
small tmpfs, filled to 100 % while server and gateway run.

Measured on main before: 5 calls over 30 s gave 0 alerts, 0 pages and 0
`received`, and /readyz stayed 200. Now every call is acknowledged to its
node, shown and paged from the call journal; /readyz says the disk is full;
once space is freed every call is committed exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Device, Mosquitto, Services, record_fault, wait_for, write_rooms_csv
from tests.test_paging_faults import ImHook

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"
)
#: Five rooms, one call each (a second press in a room would join its call).
ROOMS = [(f"F1-0{i}01", f"dev-{i}") for i in range(1, 6)]
CALLS = [f"full-{i}" for i in range(1, 6)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(disk: Path) -> Path:
    """Write until the filesystem refuses: 100 % full."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last partial megabyte
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_calls_on_a_full_disk_are_acked_shown_paged_and_committed_once(
    broker: Mosquitto, tmp_path: Path, small_disk: Path
) -> None:
    im = ImHook()
    rooms_csv = write_rooms_csv(tmp_path / "rooms5.csv", ROOMS)
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps({"desk": f"json://127.0.0.1:{im.port}/hook"}),
        MAMAROOM_ESCALATION__TIERS='[{"after_s": 0, "im": ["desk"]}]',
    ).start()
    devs = [Device(broker.port, device) for _, device in ROOMS]
    filler: Path | None = None
    try:
        svc.admin("GET", "/api/alerts").raise_for_status()  # logged in before the fill
        filler = fill(small_disk)
        assert os.statvfs(small_disk).f_bavail == 0
        for dev, call_id in zip(devs, CALLS, strict=True):
            dev.call("press", call_id)
        for dev, call_id in zip(devs, CALLS, strict=True):
            wait_for(
                lambda: "received" in dev.statuses(call_id),  # noqa: B023 (polled before the loop moves on)
                timeout=30,
                what=f"{call_id} received on a full disk",
                detail=svc.logs,
            )
        shown = svc.admin("GET", "/api/alerts", params={"kind": "call"}, timeout=30).json()
        assert sorted(a["call_id"] for a in shown) == CALLS
        assert all(a["provisional"] and a["id"] < 0 for a in shown)
        wait_for(
            lambda: len({m for m in im.messages if m.startswith("紧急呼叫")}) == len(CALLS),
            timeout=30,
            what="every call paged over IM",
            detail=svc.logs,
        )
        ready = svc.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["disk"].startswith("low")
        assert ready.json()["checks"]["call_journal"] != "ok"

        freed = time.monotonic()
        filler.unlink()
        filler = None
        committed = wait_for(
            lambda: (
                (a := svc.admin("GET", "/api/alerts", params={"kind": "call"}).json())
                and all(x["id"] > 0 for x in a)
                and a
            ),
            timeout=60,
            what="the journalled calls committed",
            detail=svc.logs,
        )
        wait_for(
            lambda: svc.http.get("/readyz").status_code == 200,
            timeout=30,
            what="ready again",
            detail=lambda: svc.http.get("/readyz").text,
        )
        recovered_s = time.monotonic() - freed
        assert sorted(a["call_id"] for a in committed) == CALLS  # each exactly once
        for a in committed:
            timeline = svc.admin("GET", f"/api/alerts/{a['id']}").json()["timeline"]
            assert timeline[0]["what"] == "raised"
            assert any(e["what"] == "paged" and e["who"] == "desk" for e in timeline)
        record_fault(
            "data disk 100 % full (tmpfs)",
            f"calls lost 0 of {len(CALLS)}: all acked `received`, shown and paged "
            "from the call journal; /readyz 503 (disk low); each committed exactly "
            f"once and ready again {recovered_s:.1f} s after space was freed",
        )
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        for dev in devs:
            dev.close()
        svc.stop()
        im.close()
