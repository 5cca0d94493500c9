"""Hypothesis property tests for the parsers that face the outside world:
topics and payloads (mamaroom/contract.py, gateway/decode.py), the ESPA
encoder and passive-mode poll reader (paging/espa.py), and the
LD2410 radar frame parser (firmware/ld2410.py, imported by path: it is
MicroPython code that is also plain Python).

Each says what must hold for ANY input, not just the examples we thought of:
no exception but ContractError, a valid message read back field for field,
frames found whatever the chunking and the garbage around them."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import select
import sys
import time
import tty
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.decode import DeviceMessage, StatusUpdate, decode
from mamaroom.config import EspaSettings
from mamaroom.contract import (
    MAX_PAYLOAD_BYTES,
    Call,
    ContractError,
    Kind,
    Occupancy,
    RejectReason,
    Telemetry,
    device_topic,
    parse_device_topic,
    parse_payload,
    parse_status,
)
from mamaroom.storage import Record
from mamaroom.storage.line_protocol import to_line
from paging.espa import (
    ETX,
    MAX_TEXT,
    RS,
    SOH,
    STX,
    US,
    EspaLink,
    bcc,
    page_block,
    to_7bit,
)
from tests.support import ROOT, wait_for

# --- topics -----------------------------------------------------------------

device_ids = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)
kinds = st.sampled_from(list(Kind))
# Topics near the real ones: right prefix, odd segments; and any text at all.
segment = st.text(st.characters(codec="utf-8", exclude_characters="/"), max_size=40)
near_topics = st.builds(
    lambda parts: "/".join(parts),
    st.lists(
        st.one_of(
            segment, st.sampled_from(["mr", "v1", "dev", "cmd", "call", "status", "dev-a", ""])
        ),
        min_size=1,
        max_size=7,
    ),
)
topics = st.one_of(
    near_topics,
    st.text(max_size=80),
    st.builds(lambda d, k: f"mr/v1/dev/{d}/{k}", segment, segment),
)


@given(topics)
@example("mr/v1/dev/DEV-A/call")  # upper case is not a device id
@example("mr/v1/dev/dev-a/call/")
def test_any_topic_is_parsed_or_refused_as_bad_topic(topic: str) -> None:
    try:
        device, kind = parse_device_topic(topic)
    except ContractError as exc:
        assert exc.reason is RejectReason.BAD_TOPIC
        return
    assert device_topic(device, kind) == topic  # accepted means exactly canonical


@given(device_ids, kinds)
def test_every_device_topic_round_trips(device: str, kind: Kind) -> None:
    assert parse_device_topic(device_topic(device, kind)) == (device, kind)


# --- payloads ---------------------------------------------------------------

int64 = st.integers(0, 2**63 - 1)
timestamps = st.one_of(st.none(), st.integers(0, 2**53))
envelopes = st.fixed_dictionaries({"v": st.just(1), "boot": int64, "seq": int64, "ts": timestamps})
occupancies = st.builds(
    lambda e, o, s, r, still: {**e, "occupied": o, "source": s, "radar": r, "still_s": still},
    envelopes,
    st.booleans(),
    st.sampled_from(["door", "radar", "pir", "fused"]),
    st.sampled_from([None, "none", "moving", "still", "both"]),
    st.one_of(st.none(), st.integers(0, 2**31)),
)
calls = st.builds(
    lambda e, a, c, s: {**e, "action": a, "call_id": c, "status": s},
    envelopes,
    st.sampled_from(["press", "presence", "reset", "shown"]),
    st.text(min_size=1, max_size=64),
    st.sampled_from([None, "received", "acknowledged", "arrived", "resolved"]),
)
telemetries = st.builds(
    lambda e, u, r, h, fw: {**e, "uptime_s": u, "rssi": r, "heap_free": h, "fw": fw},
    envelopes,
    st.one_of(st.none(), st.integers(0, 2**40)),
    st.one_of(st.none(), st.integers(-127, 20)),
    st.one_of(st.none(), st.integers(0, 2**31)),
    st.one_of(st.none(), st.text(max_size=64)),
)
VALID = {
    Kind.OCCUPANCY: (occupancies, Occupancy),
    Kind.CALL: (calls, Call),
    Kind.TELEMETRY: (telemetries, Telemetry),
}

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def mutate(base: dict[str, Any], key: str, value: Any) -> bytes:
    return json.dumps({**base, key: value}).encode()


@st.composite
def hostile_payloads(draw: st.DrawFn) -> bytes:
    """Near misses of valid messages, arbitrary JSON, and raw bytes."""
    kind = draw(st.sampled_from(list(VALID)))
    base = draw(VALID[kind][0])
    return draw(
        st.one_of(
            st.builds(mutate, st.just(base), st.sampled_from(sorted(base)), json_values),
            st.builds(lambda v: json.dumps(v).encode(), json_values),
            st.binary(max_size=200),
            st.just(json.dumps(base).encode()[:-1]),  # cut short
            st.builds(
                lambda n: json.dumps({**base, "pad": "x" * n}).encode(),
                st.integers(MAX_PAYLOAD_BYTES - 200, MAX_PAYLOAD_BYTES + 50),
            ),
        )
    )


@given(kinds, hostile_payloads())
@settings(max_examples=400)
@example(Kind.OCCUPANCY, b'{"v":true,"boot":0,"seq":0,"ts":null,"occupied":true,"source":"door"}')
@example(Kind.CALL, b'{"v":1,"boot":-1,"seq":0,"ts":null,"action":"press","call_id":"x"}')
@example(Kind.TELEMETRY, b'{"v":1,"boot":0,"seq":9223372036854775808,"ts":null}')
@example(Kind.TELEMETRY, b"[]")
@example(Kind.TELEMETRY, b"\xff\xfe")
def test_any_payload_is_accepted_valid_or_refused_with_a_reason(kind: Kind, payload: bytes) -> None:
    try:
        msg = parse_payload(kind, payload)
    except ContractError as exc:
        if kind in (Kind.STATUS, Kind.CMD):
            assert exc.reason in (RejectReason.BAD_TOPIC, RejectReason.OVERSIZE)
        elif len(payload) > MAX_PAYLOAD_BYTES:
            assert exc.reason is RejectReason.OVERSIZE
        else:
            assert exc.reason in (RejectReason.NOT_JSON, RejectReason.INVALID_PAYLOAD)
        return
    # Accepted: then it really is a valid message of that kind.
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert isinstance(msg, VALID[kind][1])
    data = json.loads(payload)
    assert data["v"] == 1 and type(data["v"]) is int
    for key in ("boot", "seq"):
        assert type(data[key]) is int and 0 <= data[key] < 2**63


@given(st.data())
def test_every_valid_message_reads_back_field_for_field(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(list(VALID)))
    body = data.draw(VALID[kind][0])
    msg = parse_payload(kind, json.dumps(body).encode())
    assert {k: getattr(msg, k) for k in body} == body


def plain_line(rec: Record) -> str:
    """Line protocol the obvious way (docs/storage.md): the oracle for the
    gateway's faster `to_line`."""
    msg = rec.message
    tags = sorted(
        [
            ("device", rec.device),
            ("room", rec.room or ""),
            ("building", rec.building or ""),
            ("floor", "" if rec.floor is None else str(rec.floor)),
        ]
    )
    # A device time more than 24 h from the arrival is not the point's time:
    # device_clock is false and the device's own ts is kept beside.
    trusted = msg.ts is not None and abs(msg.ts - rec.received_ms) <= 24 * 3600 * 1000
    fields: dict[str, Any] = {
        "boot": msg.boot,
        "seq": msg.seq,
        "received_ms": rec.received_ms,
        "device_clock": trusted,
    }
    if msg.ts is not None and not trusted:
        fields["device_ts_ms"] = msg.ts
    names = {
        Occupancy: ("occupied", "source", "radar", "still_s"),
        Telemetry: ("uptime_s", "rssi", "heap_free", "fw", "reset_reason"),
        Call: ("action", "call_id", "status"),
    }[type(msg)]
    fields.update({n: getattr(msg, n) for n in names})
    envelope = {"boot", "seq", "received_ms", "device_clock", "device_ts_ms"}
    for key, value in (msg.model_extra or {}).items():
        if key.isidentifier() and key not in fields and key not in envelope:
            fields[f"x_{key}"] = value

    def field(v: Any) -> str | None:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, int):  # InfluxDB's integers are 64-bit: larger is left out
            return f"{v}i" if -(2**63) <= v < 2**63 else None
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else None
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return None

    def tag(v: str) -> str:
        for ch in "\\, =":
            v = v.replace(ch, "\\" + ch)
        return v

    measurement = {Occupancy: "occupancy", Telemetry: "telemetry", Call: "call"}[type(msg)]
    head = measurement + "".join(f",{k}={tag(v)}" for k, v in tags if v)
    body = ",".join(f"{k}={t}" for k, v in fields.items() if (t := field(v)) is not None)
    time_ms = msg.ts if trusted and msg.ts is not None else rec.received_ms
    return f"{head} {body} {time_ms * 1_000_000 + (msg.seq + msg.boot * 919_113) % 1_000_000}"


tag_texts = st.one_of(st.none(), st.text(max_size=12))


@given(
    st.data(),
    st.text(min_size=1, max_size=12),
    tag_texts,
    tag_texts,
    st.one_of(st.none(), st.integers(-5, 99)),
    st.dictionaries(
        st.one_of(
            st.text(max_size=10),  # and names that could clash:
            st.sampled_from(["received_ms", "device_clock", "fw"]),
        ),
        json_values,
        max_size=3,
    ),
)
def test_every_message_becomes_the_line_the_schema_says(
    data: st.DataObject,
    device: str,
    room: str | None,
    building: str | None,
    floor: int | None,
    extras: dict[str, Any],
) -> None:
    kind = data.draw(st.sampled_from(list(VALID)))
    body = data.draw(VALID[kind][0])
    if kind is Kind.TELEMETRY:
        body = {**extras, **body}
    msg = parse_payload(kind, json.dumps(body).encode())
    rec = Record(device, room, kind, msg, 1_700_000_000_000, building, floor)
    assert to_line(rec) == plain_line(rec)


@given(st.binary(max_size=20))
@example(b" online\n")
def test_status_is_online_offline_or_refused(payload: bytes) -> None:
    try:
        status = parse_status(payload)
    except ContractError as exc:
        assert exc.reason is RejectReason.INVALID_PAYLOAD
        return
    assert payload.strip() == status.encode()


@given(
    topics | st.builds(device_topic, device_ids, kinds),
    hostile_payloads() | st.sampled_from([b"online", b"offline", b""]),
    st.booleans(),
)
@settings(max_examples=300)
def test_the_gateway_decoder_never_fails_but_with_a_reason(
    topic: str, payload: bytes, retained: bool
) -> None:
    try:
        inbound = decode(topic, payload, retained=retained)
    except ContractError as exc:
        assert exc.reason in set(RejectReason) - {RejectReason.UNKNOWN_DEVICE}
        return
    assert inbound is None or isinstance(inbound, StatusUpdate | DeviceMessage)


# --- ESPA -----------------------------------------------------------------------

pagers = st.from_regex(r"[0-9]{1,16}", fullmatch=True)


def read_block(block: bytes) -> tuple[str, str]:
    """An independent reader of `SOH 1 STX 1 US pager RS 2 US text ETX BCC`."""
    assert block[:1] == SOH and block[-2:-1] == ETX
    assert bcc(block[1:-1]) == block[-1]
    body = block[1:-2]
    assert body.count(ETX) == 0 and body.count(SOH) == 0  # framing cannot be broken
    assert body[:4] == b"1" + STX + b"1" + US
    pager, _, rest = body[4:].partition(RS)
    assert rest[:2] == b"2" + US
    return pager.decode(), rest[2:].decode("ascii")


@given(pagers, st.text(max_size=300))
@example("100", "CALL \x03\x01\x1e inject")  # control characters in a room name
@example("7", "母婴室 SP1-0101 1F ☎")
def test_any_page_text_makes_one_well_framed_block(pager: str, text: str) -> None:
    block = page_block(pager, text)
    got_pager, got_text = read_block(block)
    assert got_pager == pager
    assert got_text == to_7bit(text)
    assert len(got_text) <= MAX_TEXT and all(32 <= ord(c) < 127 for c in got_text)


@given(
    st.text(min_size=1, max_size=16).filter(lambda p: not (p.isascii() and p.isdigit())),
    st.text(max_size=20),
)
def test_a_pager_number_that_is_not_digits_is_refused(pager: str, text: str) -> None:
    with pytest.raises(ValueError):
        page_block(pager, text)


POLL = b"\x041\x05"


@pytest.mark.timeout(600)
def test_passive_mode_answers_polls_through_any_line_noise() -> None:
    """Random bytes on the line, then the paging system's poll: the passive
    link still answers every poll (EOT: nothing to send) and never dies."""
    master, slave = os.openpty()
    tty.setraw(master)
    link = EspaLink(EspaSettings(port=os.ttyname(slave), mode="passive", poll_silence_s=60))
    link.start()

    def answer(noise: bytes) -> bytes:
        while select.select([master], [], [], 0)[0]:
            os.read(master, 1024)  # drop answers to polls hidden in earlier noise
        os.write(master, noise + POLL)
        deadline = time.monotonic() + 10
        got = b""
        while time.monotonic() < deadline and not got:
            if select.select([master], [], [], 0.05)[0]:
                got = os.read(master, 1)
        return got

    @given(st.binary(max_size=64))
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @example(b"\x04")  # half a poll before the poll
    @example(b"\x04\x01")
    def noisy(noise: bytes) -> None:
        assert answer(noise) == b"\x04"

    try:
        wait_for(lambda: answer(b"") == b"\x04", what="the link answering a first poll")
        noisy()
        assert link._thread is not None and link._thread.is_alive()
    finally:
        link.stop()
        os.close(master)
        os.close(slave)


# --- LD2410 -----------------------------------------------------------------------


def load_ld2410() -> ModuleType:
    """The firmware's parser under CPython (Hypothesis needs it): MicroPython's
    tick functions, which its Radar imports (from firmware/ticks.py), given as
    a stand-in `ticks`."""
    ticks = ModuleType("ticks")
    vars(ticks).update(
        ticks_ms=lambda: time.monotonic_ns() // 1_000_000,
        ticks_diff=lambda a, b: a - b,
        ticks_add=lambda a, b: a + b,
    )
    spec = importlib.util.spec_from_file_location("fw_ld2410", ROOT / "firmware" / "ld2410.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("ticks")
    sys.modules["ticks"] = ticks
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["ticks"]
        else:
            sys.modules["ticks"] = saved
    return module


ld2410 = load_ld2410()
readings = st.fixed_dictionaries(
    {
        "state": st.sampled_from(["none", "moving", "still", "both"]),
        "move_cm": st.integers(0, 0xFFFF),
        "move_energy": st.integers(0, 255),
        "still_cm": st.integers(0, 0xFFFF),
        "still_energy": st.integers(0, 255),
        "detect_cm": st.integers(0, 0xFFFF),
    }
)
garbage = st.binary(max_size=40).filter(lambda b: ld2410.HEADER not in b)


def feed_in_chunks(data: bytes, sizes: list[int]) -> list[Any]:
    parser = ld2410.Parser()
    out: list[Any] = []
    i = 0
    for size in sizes or [len(data) or 1]:
        out += parser.feed(data[i : i + size])
        i += size
    out += parser.feed(data[i:])
    return out


def as_dict(r: Any) -> dict[str, Any]:
    # A reading is a plain tuple on the board (heap): field order as ld2410.py's indices.
    return dict(
        zip(
            ("state", "move_cm", "move_energy", "still_cm", "still_energy", "detect_cm"),
            r,
            strict=True,
        )
    )


@given(
    st.lists(st.tuples(garbage, readings), max_size=6),
    garbage,
    st.lists(st.integers(1, 30), max_size=40),
)
@settings(max_examples=300)
def test_every_frame_is_found_through_garbage_in_any_chunking(
    frames: list[tuple[bytes, dict[str, Any]]], tail: bytes, sizes: list[int]
) -> None:
    stream = b"".join(junk + ld2410.encode(**r) for junk, r in frames) + tail
    got = feed_in_chunks(stream, sizes)
    assert [as_dict(r) for r in got] == [r for _, r in frames]


@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=30))
@settings(max_examples=300)
def test_any_byte_stream_never_breaks_the_parser(data: bytes, sizes: list[int]) -> None:
    whole = ld2410.Parser().feed(data)
    # The same readings however the UART splits the bytes.
    assert [as_dict(r) for r in feed_in_chunks(data, sizes)] == [as_dict(r) for r in whole]
    for r in whole:
        assert r[ld2410.STATE] in ld2410.STATES
