"""The firmware's pure logic, on the real MicroPython interpreter (unix port),
and the firmware's contract mirror checked against mamaroom/contract.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import get_args

from mamaroom.contract import CallAck, Kind, device_topic, parse_payload
from tests.firmware.mpy import build

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def micropython() -> str:
    found = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    assert Path(found).exists(), "micropython missing: `make test` installs it (PyPI)"
    return found


def test_logic_tests_pass_under_micropython(tmp_path: Path) -> None:
    # Precompiled, as the node runs, in the node's 64 KB heap (from source,
    # the compiler itself needs more than that for the larger modules).
    built = build(tmp_path / "fw", tests=True)
    out = subprocess.run([micropython(), "-X", "heapsize=64K", "tests/run.py"], cwd=built,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "micropython" in subprocess.run(
        [micropython(), "-c", "import sys; print(sys.implementation.name)"],
        capture_output=True, text=True, timeout=30).stdout
    summary = out.stdout.strip().splitlines()[-1]
    passed = int(summary.split()[0])
    assert passed >= 20 and summary.endswith("0 failed"), out.stdout


def _firmware_contract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firmware_contract", FIRMWARE / "contract.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_firmware_mirror_agrees_with_the_contract() -> None:
    fw = _firmware_contract()
    assert set(fw.KINDS) == {k.value for k in Kind}
    for kind in Kind:
        assert fw.device_topic("n-sp1-0101", kind.value) == device_topic("n-sp1-0101", kind)
    assert set(fw.CALL_ACK_STATUSES) == set(get_args(CallAck.model_fields["status"].annotation))
    # What the firmware builds, the gateway accepts.
    for body, kind in [
        (fw.occupancy(fw.envelope(7, 42, 1732400000000), True, "door", radar="still",
                      still_s=310), Kind.OCCUPANCY),
        (fw.occupancy(fw.envelope(7, 43, None), False, "fused"), Kind.OCCUPANCY),
        (fw.call(fw.envelope(7, 44, None), "press", "b3f1-7-44"), Kind.CALL),
        (fw.call(fw.envelope(7, 45, None), "press", "b3f1-7-45", test=True), Kind.CALL),
        (fw.call(fw.envelope(7, 46, None), "shown", "b3f1-7-44", "received"), Kind.CALL),
    ]:
        parse_payload(kind, json.dumps(body).encode())
    ack = CallAck(call_id="b3f1-7-44", status="acknowledged").model_dump_json().encode()
    assert fw.parse_cmd(ack) == {"cmd": "call_ack", "call_id": "b3f1-7-44",
                                 "status": "acknowledged"}
