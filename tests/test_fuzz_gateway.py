"""Fuzzed MQTT traffic at a running gateway through a real broker.

FUZZ_MESSAGES messages (10,000 in `make test`, 100,000 in
`make chaos`) of every kind of wrong: bad topics under mr/v1/dev/, raw bytes,
near-miss JSON, oversize payloads, unknown devices, junk statuses, with
valid occupancy and telemetry messages interleaved, some of them at the
contract's extremes (`ts` 0, 2**53, in microseconds or a year off; `boot` and
`seq` at 2**63-1; payloads of exactly 4096 bytes). Afterwards the gateway
is still running and ready, every refusal is counted under its reason
exactly as expected, and every interleaved valid message is in storage:
on SQLite and on a real InfluxDB.

Each generator says what its message is meant to be; the expectation is
cross-checked against the contract's own decoder for every message, so a
generator mistake cannot pass silently either.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.decode import decode
from mamaroom.contract import MAX_PAYLOAD_BYTES, ContractError, RejectReason
from tests.support import InfluxDB, Mosquitto, Services, wait_for

N = int(os.environ.get("FUZZ_MESSAGES", "10000"))
KNOWN = ("dev-a", "dev-b")  # tests/conftest.py ROOMS
VALID_BOOT = 777_777  # the interleaved valid messages; fuzz never makes this boot valid
#: Extreme valid messages count their boots down from the largest (one boot each).
EXTREME_TOP = 2**63 - 1
EXTREME_FLOOR = 2**62  # fuzz's random boots stay far below
YEAR_MS = 365 * 86_400_000
#: Reasons a fuzz run does not exercise (the budget is set out of its way).
NOT_FUZZED = {RejectReason.RATE_LIMITED}
MAYBE = "maybe"  # a mutation that may or may not still be valid
VALID = "valid"
IGNORED = "ignored"  # cmd traffic, empty status: not for the gateway

Message = tuple[str, bytes, str]


class Fuzz:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.seq = {d: 0 for d in KNOWN}
        self.extremes = 0

    def text(self, n: int) -> str:
        """Printable unicode with no MQTT wildcards or separators (a topic
        segment); control characters make the broker drop the connection."""
        alphabet = "abcXYZ-_.019 é母婴室☎$"
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def envelope(self) -> dict[str, Any]:
        return {
            "v": 1,
            "boot": self.r.randrange(10**6),
            "seq": self.r.randrange(10**9),
            "ts": self.r.choice([None, int(time.time() * 1000)]),
        }

    def body(self, kind: str) -> dict[str, Any]:
        e = self.envelope()
        if kind == "occupancy":
            return {**e, "occupied": self.r.random() < 0.5, "source": "door"}
        if kind == "call":
            return {**e, "action": "shown", "call_id": f"fz-{self.r.randrange(10**6)}"}
        return {**e, "uptime_s": self.r.randrange(10**6), "rssi": -60}

    # --- the generators: (topic, payload, what it is meant to be) -------------------

    def valid(self) -> Message:
        device = self.r.choice(KNOWN)
        kind = self.r.choice(["occupancy", "telemetry"])
        self.seq[device] += 1
        body = {**self.body(kind), "boot": VALID_BOOT, "seq": self.seq[device]}
        return f"mr/v1/dev/{device}/{kind}", json.dumps(body).encode(), VALID

    def extreme(self) -> Message:
        """Valid, at the contract's edges; each its own boot (counted down from
        2**63-1), so each is one point (line_protocol.point_time_ns)."""
        device = self.r.choice(KNOWN)
        kind = self.r.choice(["occupancy", "telemetry"])
        now = int(time.time() * 1000)
        boot = EXTREME_TOP - self.extremes
        seq = self.r.choice([EXTREME_TOP - self.extremes, self.extremes])
        self.extremes += 1
        body = {
            **self.body(kind),
            "boot": boot,
            "seq": seq,
            "ts": self.r.choice([None, 0, 2**53, now * 1000, now + YEAR_MS, now - YEAR_MS, now]),
        }
        payload = json.dumps(body).encode()
        if kind == "telemetry" and self.r.random() < 0.5:  # exactly at the size limit
            body["pad"] = ""
            body["pad"] = "p" * (MAX_PAYLOAD_BYTES - len(json.dumps(body).encode()))
            payload = json.dumps(body).encode()
            assert len(payload) == MAX_PAYLOAD_BYTES
        return f"mr/v1/dev/{device}/{kind}", payload, VALID

    def bad_topic(self) -> Message:
        device = self.r.choice(KNOWN)
        topic = self.r.choice(
            [
                "mr/v1/dev",
                "mr/v1/dev/",
                f"mr/v1/dev/{device}",
                f"mr/v1/dev/{device}/",
                f"mr/v1/dev/{device}/{self.text(self.r.randrange(1, 12))}",
                f"mr/v1/dev/{device}/call/{self.text(3)}",
                f"mr/v1/dev/{self.text(self.r.randrange(1, 40))}X/occupancy",
                f"mr/v1/dev/{'a' * 33}/call",
                "mr/v1/dev/Dev-A/call",
                f"mr/v1/dev/{device}/CALL",
                f"mr/v1/dev//{device}/call",
            ]
        )
        return topic, json.dumps(self.body("occupancy")).encode(), RejectReason.BAD_TOPIC

    def oversize(self) -> Message:
        kind = self.r.choice(["occupancy", "call", "telemetry", "status"])
        size = MAX_PAYLOAD_BYTES + 1 + self.r.randrange(2000)
        payload = self.r.choice(
            [b"x" * size, json.dumps({**self.body("telemetry"), "pad": "p" * size}).encode()]
        )
        return (f"mr/v1/dev/{self.r.choice(KNOWN)}/{kind}", payload, RejectReason.OVERSIZE)

    def not_json(self) -> Message:
        kind = self.r.choice(["occupancy", "call", "telemetry"])
        good = json.dumps(self.body(kind)).encode()
        payload = self.r.choice(
            [
                bytes(self.r.randrange(256) for _ in range(self.r.randrange(1, 120))),
                good[: self.r.randrange(1, len(good))],
                b"",
                b"{",
                b"nul\x00l",
                good.replace(b'"', b"'"),
                b"\xff" + good,
            ]
        )
        with contextlib.suppress(ValueError):
            json.loads(payload)
            payload = b"{" + payload  # keep it not-JSON, not merely "not an object"
        return f"mr/v1/dev/{self.r.choice(KNOWN)}/{kind}", payload, RejectReason.NOT_JSON

    def invalid(self) -> Message:
        kind = self.r.choice(["occupancy", "call", "telemetry"])
        body = self.body(kind)
        wrong_values: dict[str, list[Any]] = {
            "v": ["1", True, 2, 0, 1.5, None],
            "boot": [-1, 2**64, "1", True, 1.5, None],
            "seq": [-1, 2**63, "7", False, 2.5, None],
            "ts": [-1, "now", True, 2**54, 1.5],
            "occupied": ["yes", 1, None],
            "source": ["window", 1, None],
            "action": ["push", None, 1],
            "call_id": ["", "x" * 65, None, 5],
            "rssi": [-128, 21, "x", True, 1.5],
            "uptime_s": [-1, "x", True, 1.5],
        }
        fields = ["v", "boot", "seq", "ts"] + (
            ["occupied", "source"]
            if kind == "occupancy"
            else ["action", "call_id"]
            if kind == "call"
            else ["rssi", "uptime_s"]
        )
        field = self.r.choice(fields)
        body[field] = self.r.choice(wrong_values[field])
        payload = json.dumps(body).encode()
        if self.r.random() < 0.1:
            payload = json.dumps(self.r.choice([[body], "text", 42, None])).encode()
        return f"mr/v1/dev/{self.r.choice(KNOWN)}/{kind}", payload, RejectReason.INVALID_PAYLOAD

    def bad_status(self) -> Message:
        payload = self.r.choice(
            [b"on", b"ONLINE", b"offline!", b"1", self.text(5).encode(), b'{"status":"online"}']
        )
        return (f"mr/v1/dev/{self.r.choice(KNOWN)}/status", payload, RejectReason.INVALID_PAYLOAD)

    def unknown_device(self) -> Message:
        device = f"fz-{self.r.randrange(500)}"
        kind = self.r.choice(["occupancy", "telemetry", "call"])
        return (
            f"mr/v1/dev/{device}/{kind}",
            json.dumps(self.body(kind)).encode(),
            RejectReason.UNKNOWN_DEVICE,
        )

    def ignored(self) -> Message:
        return self.r.choice(
            [
                (
                    f"mr/v1/dev/{self.r.choice(KNOWN)}/cmd",
                    bytes(self.r.randrange(256) for _ in range(30)),
                    IGNORED,
                ),
                (f"mr/v1/dev/{self.r.choice(KNOWN)}/status", b"", IGNORED),
            ]
        )

    def mutation(self) -> Message:
        """Flip, drop or duplicate bytes of a valid message: anything may come out."""
        kind = self.r.choice(["occupancy", "telemetry", "status"])
        good = (
            json.dumps(self.body(kind)).encode()
            if kind != "status"
            else self.r.choice([b"online", b"offline"])
        )
        data = bytearray(good)
        for _ in range(self.r.randrange(1, 4)):
            i = self.r.randrange(len(data))
            op = self.r.randrange(3)
            if op == 0:
                data[i] = self.r.randrange(256)
            elif op == 1:
                del data[i]
            else:
                data.insert(i, data[i])
            if not data:
                data = bytearray(b"?")
        return f"mr/v1/dev/{self.r.choice(KNOWN)}/{kind}", bytes(data), MAYBE

    def messages(self, n: int) -> list[Message]:
        weighted: list[tuple[Callable[[], Message], int]] = [
            (self.valid, 10),
            (self.extreme, 2),
            (self.bad_topic, 14),
            (self.oversize, 2),
            (self.not_json, 18),
            (self.invalid, 24),
            (self.bad_status, 6),
            (self.unknown_device, 8),
            (self.ignored, 4),
            (self.mutation, 14),
        ]
        makers = [m for m, w in weighted for _ in range(w)]
        return [self.r.choice(makers)() for _ in range(n)]


def outcome(topic: str, payload: bytes) -> str:
    """What the gateway must do with it, by the contract's own decoder."""
    try:
        inbound = decode(topic, payload, retained=False)
    except ContractError as exc:
        return exc.reason
    if inbound is None:
        return IGNORED
    return VALID if inbound.device in KNOWN else RejectReason.UNKNOWN_DEVICE


Key = tuple[str, str, int, int]  # kind, device, boot, seq


def stored_valid(db: Path) -> set[Key]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        return {
            (kind, device, boot, seq)
            for kind in ("occupancy", "telemetry")
            for device, boot, seq in con.execute(
                f"SELECT device, boot, seq FROM {kind} WHERE boot=? OR boot>=?",
                (VALID_BOOT, EXTREME_FLOOR),
            )
        }


def stored_valid_influx(influx: InfluxDB) -> set[Key]:
    out: set[Key] = set()
    for kind, source in (
        ("occupancy", '"occupancy"'),
        ("telemetry", '"telemetry_30d"."telemetry"'),
    ):
        for series in influx.query(
            f'SELECT "boot", "seq" FROM {source} WHERE "boot" = '
            f'{VALID_BOOT} OR "boot" >= {EXTREME_FLOOR} GROUP BY "device"'
        ):
            out |= {
                (kind, series["tags"]["device"], boot, seq) for _, boot, seq in series["values"]
            }
    return out


@pytest.fixture(params=["sqlite", "influxdb"])
def fuzzed(
    request: pytest.FixtureRequest, broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> Iterator[tuple[Services, InfluxDB | None]]:
    influx = InfluxDB(tmp_path / "influxdb").start() if request.param == "influxdb" else None
    # Fuzz sends thousands of messages a second from two nodes: out of the budget's way.
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        influx=influx,
        MAMAROOM_GATEWAY__DEVICE_BURST="10000000",
        MAMAROOM_GATEWAY__DEVICE_RATE_PER_S="1000000",
    ).start()
    try:
        yield svc, influx
    finally:
        svc.stop()
        if influx is not None:
            influx.stop()


@pytest.mark.timeout(1800)
def test_fuzzed_traffic_is_counted_by_reason_and_valid_traffic_stored(
    fuzzed: tuple[Services, InfluxDB | None],
) -> None:
    services, influx = fuzzed
    messages = Fuzz(seed=7).messages(N)
    expected: Counter[str] = Counter()
    for topic, payload, meant in messages:
        got = outcome(topic, payload)
        assert meant in (MAYBE, got), (topic, payload[:80], meant, got)
        expected[got] += 1
    # Every reason exercised.
    assert all(expected[r] > 0 for r in RejectReason if r not in NOT_FUZZED), expected
    valid_sent = {
        (t.rsplit("/", 1)[1], t.split("/")[3], (body := json.loads(p))["boot"], body["seq"])
        for t, p, m in messages
        if m == VALID
    }
    assert any(boot >= EXTREME_FLOOR for _, _, boot, _ in valid_sent)

    before = services.metrics()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=paho.MQTTv311)
    client.max_inflight_messages_set(500)
    disconnects: list[object] = []
    client.on_disconnect = lambda *a: disconnects.append(a)
    client.connect("127.0.0.1", services.broker.port)
    client.loop_start()
    started = time.monotonic()
    try:
        for i in range(0, len(messages), 2000):  # bounded: paho queues in memory
            infos = [client.publish(t, p, qos=1) for t, p, _ in messages[i : i + 2000]]
            for info in infos:
                info.wait_for_publish(timeout=120)
    finally:
        client.disconnect()
        client.loop_stop()
    assert disconnects[:-1] == [], "the broker dropped the fuzzer"

    def rejected() -> Counter[str]:
        m = services.metrics()
        return Counter(
            {
                r.value: int(
                    m[f'mamaroom_gateway_rejected_total{{reason="{r.value}"}}']
                    - before[f'mamaroom_gateway_rejected_total{{reason="{r.value}"}}']
                )
                for r in RejectReason
            }
        )

    want = Counter({r.value: expected[r] for r in RejectReason})  # rate_limited: 0
    wait_for(
        lambda: rejected() == want,
        timeout=600,
        interval=1,
        what=f"every reject counted ({sum(want.values())} expected)",
        detail=lambda: f"counted {rejected()}, expected {want}\n{services.logs()}",
    )
    data = Path(services.env["MAMAROOM_DATA_DIR"])

    def stored() -> set[Key]:
        return (
            stored_valid(data / "store.sqlite") if influx is None else stored_valid_influx(influx)
        )

    wait_for(
        lambda: stored() >= valid_sent,
        timeout=600,
        interval=1,
        what=f"all {len(valid_sent)} interleaved valid messages stored",
        detail=lambda: f"missing {sorted(valid_sent - stored())[:5]}\n{services.logs()}",
    )
    elapsed = time.monotonic() - started
    m = services.metrics()
    assert services.gateway.alive() and m["mamaroom_gateway_ready"] == 1
    assert m["mamaroom_gateway_dead_letters"] == 0  # nothing valid was refused
    assert m['mamaroom_gateway_flagged_total{reason="ts_out_of_range"}'] > 0
    assert "Traceback" not in services.gateway.log()
    print(
        f"\n{N} fuzzed messages: {dict(want)} rejected, {len(valid_sent)} valid stored, "
        f"{elapsed:.1f} s ({N / elapsed:.0f} msg/s through broker and gateway)"
    )
