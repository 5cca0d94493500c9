"""A real gateway whose wall clock is stepped by an hour, both ways, with
Debian's libfaketime (issue 11.6): supervision runs on monotonic time, so a
silent room goes offline on time and a live one never flaps, and the step
is noticed and logged. Only the wall clock steps, as it does when NTP or an
operator sets it: CLOCK_MONOTONIC is left alone (FAKETIME_DONT_FAKE_MONOTONIC).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support import Device, Mosquitto, Services, record_fault, wait_for
from tests.test_gateway_hostile import STATE_A, STATE_B, Retained, epoch_ms

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SUPERVISION_S = 8
HOUR_S = 3600

pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="needs libfaketime: scripts/ensure-system-packages.sh faketime"
)


def test_a_stepped_gateway_clock_neither_hides_a_dead_room_nor_fails_a_live_one(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    svc = Services(broker, tmp_path, rooms_csv, MAMAROOM_GATEWAY__SUPERVISION_S=str(SUPERVISION_S))
    svc.gateway = svc.new_gateway(
        "gateway",
        LD_PRELOAD=str(LIBFAKETIME),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    svc.start()
    a, b = Device(broker.port, "dev-a"), Device(broker.port, "dev-b")
    watch = Retained(broker.port, STATE_A, STATE_B)
    stop = threading.Event()

    def heartbeat() -> None:  # dev-b is alive throughout, well inside the window
        while not stop.wait(1.0):
            b.telemetry()

    beating = threading.Thread(target=heartbeat, daemon=True)
    try:
        a.occupancy(False)
        b.occupancy(True)
        beating.start()
        wait_for(
            lambda: (
                watch.json(STATE_A)["state"] == "free"
                and watch.json(STATE_B)["state"] == "occupied"
            ),
            what="both rooms reported",
        )
        # Back an hour, right after dev-a's last word: dev-a now stays silent.
        offset.write_text(f"-{HOUR_S}\n")
        last_word = time.monotonic()
        stepped = wait_for(
            lambda: (s := watch.json(STATE_A))["state"] == "offline" and s,
            timeout=SUPERVISION_S + 60,  # before the fix: the whole hour
            what="the silent room offline on time",
            detail=svc.logs,
        )
        recovery_s = time.monotonic() - last_word
        assert stepped["reason"] == "silent"
        # Dated on the stepped clock, never in its future.
        assert epoch_ms(stepped["since"]) <= (time.time() - HOUR_S + 5) * 1000
        assert epoch_ms(stepped["last_seen"]) <= (time.time() - HOUR_S + 5) * 1000
        wait_for(lambda: "wall clock stepped" in svc.gateway.log(), what="the step logged")
        # Forward again, an hour (back to true time), while dev-b keeps talking:
        # its room must not flap offline. Watched over two supervision windows.
        assert watch.json(STATE_B)["state"] == "occupied"
        offset.write_text("+0\n")
        seen = []
        until = time.monotonic() + 2 * SUPERVISION_S
        while time.monotonic() < until:
            seen.append(watch.json(STATE_B)["state"])
            time.sleep(0.2)
        assert set(seen) == {"occupied"}, seen
        wait_for(
            lambda: svc.gateway.log().count("wall clock stepped") >= 2,
            what="the second step logged",
            detail=svc.gateway.log_tail,
        )
        # dev-a speaks again: its room is back, last_seen on the true clock.
        a.occupancy(True)
        back = wait_for(
            lambda: (s := watch.json(STATE_A))["state"] == "occupied" and s,
            what="dev-a's room back",
        )
        assert abs(epoch_ms(back["last_seen"]) - time.time() * 1000) < 60_000
        assert svc.gateway.alive() and "Traceback" not in svc.gateway.log()
        record_fault(
            "gateway wall clock stepped -1 h then +1 h (libfaketime)",
            f"calls lost 0; the silent room went offline {recovery_s:.1f} s after its "
            f"last message (supervision {SUPERVISION_S} s); a live room never "
            "flapped; both steps logged",
        )
    finally:
        stop.set()
        if beating.is_alive():
            beating.join(5)
        watch.close()
        a.close()
        b.close()
        svc.stop()
