"""The firmware's pure logic, on the real MicroPython interpreter (unix port),
and the firmware's contract mirror checked against mamaroom/contract.py."""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from mamaroom.contract import (
    COMMANDS,
    MAX_BUNDLE_BYTES,
    MAX_PAYLOAD_BYTES,
    PRESS_REPEAT_MS,
    Call,
    CallAck,
    CallStatus,
    Identify,
    Kind,
    NodeTelemetry,
    Occupancy,
    OtaCommand,
    SetTestMode,
    device_topic,
    parse_command,
    parse_payload,
)
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
    out = subprocess.run(
        [micropython(), "-X", "heapsize=64K", "tests/run.py"],
        cwd=built,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        "micropython"
        in subprocess.run(
            [micropython(), "-c", "import sys; print(sys.implementation.name)"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    )
    summary = out.stdout.strip().splitlines()[-1]
    passed = int(summary.split()[0])
    assert passed >= 20 and summary.endswith("0 failed"), out.stdout


def _firmware_contract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firmware_contract", FIRMWARE / "contract.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _firmware_module(
    name: str, monkeypatch: pytest.MonkeyPatch, **deps: dict[str, Any]
) -> ModuleType:
    """firmware/{name}.py loaded in CPython, its firmware imports stood in for
    (`contract` is always the real mirror), for its pure functions."""
    monkeypatch.setitem(sys.modules, "contract", _firmware_contract())
    for dep, attrs in deps.items():
        stub = ModuleType(dep)
        stub.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, dep, stub)
    spec = importlib.util.spec_from_file_location(f"firmware_{name}", FIRMWARE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_firmware_mirror_agrees_with_the_contract() -> None:
    fw = _firmware_contract()
    assert set(fw.KINDS) == {k.value for k in Kind}
    for kind in Kind:
        assert fw.device_topic("n-sp1-0101", kind.value) == device_topic("n-sp1-0101", kind)
    assert fw.CALL_ACK_STATUSES == tuple(s.value for s in CallStatus)  # in order
    assert CallAck.model_fields["status"].annotation is CallStatus
    assert fw.PRESS_REPEAT_MS == PRESS_REPEAT_MS
    assert fw.MAX_PAYLOAD == MAX_PAYLOAD_BYTES
    assert fw.MAX_BUNDLE == MAX_BUNDLE_BYTES
    # What the firmware builds, the gateway accepts.
    for body, kind in [
        (
            fw.occupancy(
                fw.envelope(7, 42, 1732400000000), True, "door", radar="still", still_s=310
            ),
            Kind.OCCUPANCY,
        ),
        (fw.occupancy(fw.envelope(7, 43, None), False, "fused"), Kind.OCCUPANCY),
        (fw.call(fw.envelope(7, 44, None), "press", "b3f1-7-44"), Kind.CALL),
        (fw.call(fw.envelope(7, 45, None), "press", "b3f1-7-45", test=True), Kind.CALL),
        (fw.call(fw.envelope(7, 46, None), "shown", "b3f1-7-44", "received"), Kind.CALL),
    ]:
        parse_payload(kind, json.dumps(body).encode())
    ack = CallAck(call_id="b3f1-7-44", status="acknowledged").model_dump_json().encode()
    assert fw.parse_cmd(ack) == {
        "cmd": "call_ack",
        "call_id": "b3f1-7-44",
        "status": "acknowledged",
    }


def test_every_field_the_firmware_sends_is_the_contracts() -> None:
    """Each field the builders can set is a field of the payload model, not an
    extra the gateway ignores; and every action and status is one the model takes."""
    fw = _firmware_contract()
    occ = fw.occupancy(fw.envelope(7, 1, 1732400000000), True, "radar", radar="both", still_s=0)
    assert set(occ) == set(Occupancy.model_fields)
    for source in get_args(Occupancy.model_fields["source"].annotation):
        parse_payload(
            Kind.OCCUPANCY,
            json.dumps(fw.occupancy(fw.envelope(7, 2, None), False, source)).encode(),
        )
    for action in get_args(Call.model_fields["action"].annotation):
        for status in (None, *fw.CALL_ACK_STATUSES):
            body = fw.call(fw.envelope(7, 3, None), action, "b3f1-7-3", status, test=True)
            assert set(body) <= set(Call.model_fields)
            call = parse_payload(Kind.CALL, json.dumps(body).encode())
            assert isinstance(call, Call) and call.test is True and call.status == status
    plain = parse_payload(
        Kind.CALL, json.dumps(fw.call(fw.envelope(7, 4, None), "press", "b3f1-7-4")).encode()
    )
    assert isinstance(plain, Call) and plain.test is False
    assert set(fw.call(fw.envelope(7, 5, None), "shown", "x", "received", test=True)) == set(
        Call.model_fields
    )


def _health_fields() -> set[str]:
    """The keys of the telemetry dict firmware/report.py's health() returns."""
    tree = ast.parse((FIRMWARE / "report.py").read_text())
    [health] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "health"]
    [ret] = [n for n in ast.walk(health) if isinstance(n, ast.Return)]
    assert isinstance(ret.value, ast.Dict), "health() returns one dict literal"
    keys = [
        k.value for k in ret.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
    ]
    assert len(keys) == len(ret.value.keys), "every key a literal string"
    return set(keys)


def test_the_firmware_telemetry_is_the_contracts_node_telemetry() -> None:
    # Every field the node sends is named (and typed) by NodeTelemetry, and
    # NodeTelemetry names nothing the node does not send. (tests/firmware/nodes.py
    # validates the real node's telemetry against it too.)
    assert _health_fields() == set(NodeTelemetry.model_fields)


def _dispatched() -> set[str]:
    """The commands firmware/commands.py acts on (`name == "..."` in on_msg)."""
    tree = ast.parse((FIRMWARE / "commands.py").read_text())
    [on_msg] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "on_msg"]
    return {
        c.comparators[0].value
        for c in ast.walk(on_msg)
        if isinstance(c, ast.Compare)
        and isinstance(c.left, ast.Name)
        and c.left.id == "name"
        and isinstance(c.comparators[0], ast.Constant)
        and isinstance(c.comparators[0].value, str)
    }


URL = "http://10.0.0.1:8000/api/firmware/1.2.0.bundle"
SHA = "0123456789abcdef" * 4
#: Commands of each kind, valid by the contract: the node must take each one.
VALID: list[BaseModel | bytes] = [
    *(CallAck(call_id="b3f1-7-44", status=s) for s in CallStatus),
    CallAck(call_id="x" * 64, status=CallStatus.RESOLVED),
    b'{"cmd":"call_ack","call_id":"b","status":"received","later":1}',
    SetTestMode(on=True),
    SetTestMode(on=False),
    SetTestMode(on=True, minutes=0.5),
    SetTestMode(on=True, minutes=1440),
    b'{"cmd":"test_mode","on":true}',
    b'{"cmd":"test_mode","on":true,"minutes":5}',
    Identify(),
    Identify(seconds=1),
    Identify(seconds=600),
    b'{"cmd":"identify"}',
    OtaCommand(url=URL, sha256=SHA, version="1.2.0", size=MAX_BUNDLE_BYTES),
    OtaCommand(url=URL, sha256=SHA, version="v" * 32),
    f'{{"cmd":"ota","url":"{URL}","sha256":"{SHA}","version":"1"}}'.encode(),
]
#: Commands the contract refuses: the node must ignore each one too (an `ota`
#: one is refused by ota.check; its `size` by the download, checked against it).
INVALID: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'{"cmd":1}',
    b'{"call_id":"b","status":"received"}',
    b'{"cmd":"call_ack","call_id":"b","status":"lol"}',
    b'{"cmd":"call_ack","call_id":5,"status":"received"}',
    b'{"cmd":"call_ack","call_id":"","status":"received"}',
    b'{"cmd":"call_ack","call_id":"' + b"x" * 65 + b'","status":"received"}',
    b'{"cmd":"call_ack","status":"received"}',
    b'{"cmd":"call_ack","call_id":"b"}',
    b'{"cmd":"test_mode","on":"yes"}',
    b'{"cmd":"test_mode","on":1}',
    b'{"cmd":"test_mode"}',
    b'{"cmd":"test_mode","on":true,"minutes":0}',
    b'{"cmd":"test_mode","on":true,"minutes":-1}',
    b'{"cmd":"test_mode","on":true,"minutes":1441}',
    b'{"cmd":"test_mode","on":true,"minutes":true}',
    b'{"cmd":"test_mode","on":true,"minutes":"60"}',
    b'{"cmd":"identify","seconds":-1}',
    b'{"cmd":"identify","seconds":0}',
    b'{"cmd":"identify","seconds":601}',
    b'{"cmd":"identify","seconds":10.0}',
    b'{"cmd":"identify","seconds":"ten"}',
    b'{"cmd":"identify","seconds":true}',
    *(
        json.dumps({"cmd": "ota", "url": URL, "sha256": SHA, "version": "1.2.0", **bad}).encode()
        for bad in (
            {"url": "https://10.0.0.1/x.bundle"},
            {"url": 5},
            {"url": None},
            {"sha256": SHA[:-1]},
            {"sha256": "g" * 64},
            {"sha256": None},
            {"version": ""},
            {"version": "v" * 33},
            {"version": 120},
        )
    ),
]


def _payload(cmd: BaseModel | bytes) -> bytes:
    return cmd if isinstance(cmd, bytes) else cmd.model_dump_json().encode()


def _node_takes(fw: ModuleType, ota: ModuleType, payload: bytes) -> bool:
    cmd = fw.parse_cmd(payload)
    if cmd is None:
        return False
    if cmd["cmd"] == "ota":
        try:
            ota.check(cmd)
        except ValueError:
            return False
    return True


def _contract_takes(payload: bytes) -> bool:
    try:
        parse_command(payload)
    except ValueError:
        return False
    return True


def test_every_command_schema_is_the_firmwares(monkeypatch: pytest.MonkeyPatch) -> None:
    fw = _firmware_contract()
    ota = _firmware_module(
        "ota",
        monkeypatch,
        log={"log": print},
        mqtt={"_io": None},
        store={"load": dict, "save": print},
        version={"VERSION": "1.0.0"},
    )
    assert set(COMMANDS) == _dispatched()  # the node acts on each, and on no other
    kinds = {json.loads(_payload(c))["cmd"] for c in VALID}
    assert kinds == set(COMMANDS)  # an example of each below
    for cmd in VALID:
        payload = _payload(cmd)
        assert _contract_takes(payload), payload
        assert _node_takes(fw, ota, payload), payload
        if isinstance(cmd, BaseModel):  # the node reads what the server meant
            assert fw.parse_cmd(payload) == cmd.model_dump(mode="json")
    for payload in INVALID:
        assert not _contract_takes(payload), payload
        assert not _node_takes(fw, ota, payload), payload
    # Up to MAX_PAYLOAD, and not a byte more, on either side.
    ack = CallAck(call_id="b", status=CallStatus.RECEIVED).model_dump_json().encode()
    exact = ack[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(ack)) + b"}"
    assert len(exact) == MAX_PAYLOAD_BYTES
    assert _contract_takes(exact) and _node_takes(fw, ota, exact)
    over = exact[:-1] + b" }"
    assert not _contract_takes(over) and not _node_takes(fw, ota, over)


def test_the_call_states_and_the_press_repeat_are_the_contracts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _firmware_module("calls", monkeypatch, ticks={"ticks_diff": lambda a, b: a - b})
    assert calls.ORDER == ("calling", *(s.value for s in CallStatus))
    assert set(calls.LAMP) == set(calls.ORDER)
    c = calls.Calls()
    assert c.press("b3f1-7-1")
    c.pressed_at = 0
    assert not c.press_due(PRESS_REPEAT_MS - 1) and c.press_due(PRESS_REPEAT_MS)
