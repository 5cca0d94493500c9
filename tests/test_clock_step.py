"""The server's wall clock stepped an hour back, then two forward, mid-call,
in a real process: Debian's libfaketime, with the step written to its
timestamp file while the server runs. Only the wall clock moves (as an NTP
step or a wrong RTC does); the monotonic clock is left alone.

Measured on main before: over 3 minutes 1 page instead of 8, and the
manager tier was never reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Device, Mosquitto, Proc, Services, record_fault, wait_for
from tests.test_paging_faults import ImHook

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime missing: `make test` installs faketime"
)
TEXT = "紧急呼叫：测试楼1层母婴室（T1-0101）\nCALL Test Bldg 1F (T1-0101)"  # as IM shows it


def faked(env: dict[str, str], step_file: Path) -> dict[str, str]:
    step_file.write_text("+0\n")
    return {
        **env,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(step_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def test_escalation_keeps_its_rhythm_across_clock_steps(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    duty, manager = ImHook(), ImHook()
    step = tmp_path / "faketime"
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGING__IM__DESTINATIONS=json.dumps(
            {
                "duty": f"json://127.0.0.1:{duty.port}/hook",
                "manager": f"json://127.0.0.1:{manager.port}/hook",
            }
        ),
        MAMAROOM_ESCALATION__TIERS=json.dumps(
            [{"after_s": 0, "im": ["duty"], "repeat_s": 2}, {"after_s": 12, "im": ["manager"]}]
        ),
    )
    svc.server = Proc("server", ["server"], faked(svc.env, step), tmp_path)
    svc.start()
    dev = Device(broker.port, "dev-a")
    try:
        dev.call("press", "step-1")
        wait_for(lambda: TEXT in duty.messages, timeout=30, what="the first page", detail=svc.logs)
        step.write_text("-1h\n")  # back an hour
        wait_for(
            lambda: duty.messages.count(TEXT) >= 3,
            timeout=30,
            what="repeats after the clock went back",
            detail=svc.logs,
        )
        step.write_text("+1h\n")  # and forward two
        wait_for(
            lambda: TEXT in manager.messages,
            timeout=60,
            what="the manager tier reached on schedule",
            detail=svc.logs,
        )
        # Forward did not bunch the repeats: the manager was paged once.
        assert manager.messages.count(TEXT) == 1
        wait_for(
            lambda: "wall clock stepped" in svc.server.log(), timeout=30, what="the step logged"
        )
        assert "received" in dev.statuses("step-1")
        record_fault(
            "server wall clock stepped -1 h then +2 h (libfaketime)",
            f"calls lost 0; repeats every 2 s went on ({duty.messages.count(TEXT)} "
            "pages), the 12 s tier paged once on schedule; the step logged",
        )
    finally:
        dev.close()
        svc.stop()
        duty.close()
        manager.close()
