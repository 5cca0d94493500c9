"""The contract's topic and payload rules, on valid, invalid and edge cases."""

from __future__ import annotations

import json

import pytest

from gateway.decode import DeviceMessage, StatusUpdate, decode
from gateway.metrics import GatewayMetrics
from mamaroom.contract import (
    COMMANDS,
    DEVICE_TOPIC_PREFIX,
    DEVICE_TREE,
    GATEWAY_SUBSCRIPTION,
    GATEWAY_TOPIC_PREFIX,
    MAX_PAYLOAD_BYTES,
    REGISTRY_TOPIC,
    ROOM_STATE_SUBSCRIPTION,
    SERVER_ALERT_SUBSCRIPTION,
    SERVER_TOPIC_PREFIX,
    Call,
    CallAck,
    CallStatus,
    ContractError,
    GatewayStats,
    GatewayTopic,
    GatewayTopicKind,
    Identify,
    Kind,
    Occupancy,
    OtaCommand,
    RejectReason,
    SetTestMode,
    Telemetry,
    device_subscription,
    device_topic,
    dumps,
    gateway_topic,
    parse_command,
    parse_device_topic,
    parse_gateway_topic,
    parse_payload,
    parse_room_state_topic,
    parse_status,
    room_state_topic,
    server_alert_topic,
    shared_subscription,
    watchdog_ping_topic,
)


def _payload(**fields: object) -> bytes:
    return json.dumps({"v": 1, "boot": 7, "seq": 42, "ts": 1732400000000, **fields}).encode()


def test_the_contracts_own_examples_are_valid() -> None:
    occ = parse_payload(
        Kind.OCCUPANCY,
        b'{"v":1,"boot":7,"seq":42,"ts":1732400000000,'
        b'"occupied":true,"source":"door","radar":"still","still_s":310}',
    )
    assert isinstance(occ, Occupancy) and occ.occupied and occ.still_s == 310
    call = parse_payload(
        Kind.CALL, b'{"v":1,"boot":7,"seq":43,"ts":null,"action":"press","call_id":"b3f1-7-43"}'
    )
    assert isinstance(call, Call) and call.ts is None and call.call_id == "b3f1-7-43"
    tel = parse_payload(
        Kind.TELEMETRY,
        b'{"v":1,"boot":7,"seq":44,"ts":1,"uptime_s":3600,'
        b'"rssi":-61,"heap_free":81234,"fw":"1.0.0","temp_c":31}',
    )
    assert isinstance(tel, Telemetry) and tel.rssi == -61
    assert tel.model_extra == {"temp_c": 31}  # more telemetry fields are kept


def test_unknown_fields_are_ignored_not_fatal() -> None:
    occ = parse_payload(Kind.OCCUPANCY, _payload(occupied=False, source="fused", shiny=1))
    assert isinstance(occ, Occupancy) and not occ.occupied


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"occupied": "true", "source": "door"}, "occupied"),  # string is not a bool
        ({"occupied": 1, "source": "door"}, "occupied"),  # nor is 1
        ({"occupied": True, "source": "window"}, "source"),
        ({"occupied": True}, "source"),
        ({"occupied": True, "source": "door", "radar": "sleeping"}, "radar"),
        ({"occupied": True, "source": "door", "still_s": -1}, "still_s"),
    ],
)
def test_wrong_types_and_values_are_refused(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_payload(Kind.OCCUPANCY, _payload(**fields))
    assert err.value.reason is RejectReason.INVALID_PAYLOAD
    assert reason in err.value.detail


@pytest.mark.parametrize(
    "envelope",
    [
        {"v": 2, "boot": 1, "seq": 1, "ts": None},
        {"boot": 1, "seq": 1, "ts": None},
        {"v": 1, "boot": -1, "seq": 1, "ts": None},
        {"v": 1, "boot": 1, "seq": 1.5, "ts": None},
        {"v": 1, "boot": 1, "seq": 2**63, "ts": None},  # would overflow a 64-bit store
        {"v": 1, "boot": 1, "seq": 1},  # ts must be present, null when unsynced
        {"v": 1, "boot": 1, "seq": 1, "ts": "2024-01-01"},
        {"v": True, "boot": 1, "seq": 1, "ts": None},
    ],
)
def test_the_envelope_is_strict(envelope: dict[str, object]) -> None:
    body = json.dumps({**envelope, "occupied": True, "source": "door"}).encode()
    with pytest.raises(ContractError) as err:
        parse_payload(Kind.OCCUPANCY, body)
    assert err.value.reason is RejectReason.INVALID_PAYLOAD


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", RejectReason.NOT_JSON),
        (b"{", RejectReason.NOT_JSON),
        (b"\xc3\x28", RejectReason.NOT_JSON),  # not UTF-8
        (b"null", RejectReason.INVALID_PAYLOAD),
        (b'"text"', RejectReason.INVALID_PAYLOAD),
        (b"[]", RejectReason.INVALID_PAYLOAD),
        (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", RejectReason.OVERSIZE),
    ],
)
def test_not_json_and_oversize(payload: bytes, reason: RejectReason) -> None:
    with pytest.raises(ContractError) as err:
        parse_payload(Kind.OCCUPANCY, payload)
    assert err.value.reason is reason


def test_exactly_4_kib_is_accepted() -> None:
    body = _payload(occupied=True, source="door", pad="")
    padded = body[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert isinstance(parse_payload(Kind.OCCUPANCY, padded), Occupancy)


def test_topics_round_trip() -> None:
    assert device_topic("n-sp1-0101", Kind.OCCUPANCY) == "mr/v1/dev/n-sp1-0101/occupancy"
    assert parse_device_topic("mr/v1/dev/n-sp1-0101/call") == ("n-sp1-0101", Kind.CALL)
    assert room_state_topic("SP1-0101") == "mr/v1/room/SP1-0101/state"
    assert parse_room_state_topic("mr/v1/room/SP1-0101/state") == "SP1-0101"
    with pytest.raises(ValueError):
        device_topic("Bad/Id", Kind.STATUS)
    with pytest.raises(ValueError):
        room_state_topic("a+b")


@pytest.mark.parametrize(
    "topic",
    [
        "mr/v1/dev/dev-a",
        "mr/v1/dev/dev-a/occupancy/x",
        "mr/v2/dev/dev-a/occupancy",
        "mr/v1/dev/DEV-A/occupancy",
        "mr/v1/dev//occupancy",
        "mr/v1/dev/" + "a" * 33 + "/call",
        "mr/v1/dev/dev-a/lamp",
        "mr/v1/room/x/state",
        "other/tree",
    ],
)
def test_topics_outside_the_tree_are_refused(topic: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_device_topic(topic)
    assert err.value.reason is RejectReason.BAD_TOPIC


def test_status_is_plain_text() -> None:
    assert parse_status(b"online") == "online"
    assert parse_status(b"offline\n") == "offline"
    with pytest.raises(ContractError):
        parse_status(b'{"status":"online"}')


def test_decode_routes_each_kind() -> None:
    status = decode("mr/v1/dev/dev-a/status", b"offline", retained=True)
    assert status == StatusUpdate("dev-a", "offline", retained=True)
    msg = decode(
        "mr/v1/dev/dev-a/occupancy", _payload(occupied=True, source="door"), retained=False
    )
    assert isinstance(msg, DeviceMessage) and msg.kind is Kind.OCCUPANCY
    # The server's commands to a node are overheard, not refused.
    assert decode("mr/v1/dev/dev-a/cmd", b'{"cmd":"call_ack"}', retained=False) is None
    with pytest.raises(ContractError) as err:
        decode("mr/v1/dev/dev-a/status", b"x" * (MAX_PAYLOAD_BYTES + 1), retained=False)
    assert err.value.reason is RejectReason.OVERSIZE


def test_every_topic_is_built_here_and_is_what_it_always_was() -> None:
    # The wire: these strings are what deployed brokers, ACLs and nodes know.
    assert REGISTRY_TOPIC == "mr/v1/registry"
    assert DEVICE_TREE == "mr/v1/dev/#" and DEVICE_TOPIC_PREFIX == "mr/v1/dev/"
    assert device_subscription(Kind.CALL) == "mr/v1/dev/+/call"
    assert device_subscription(Kind.STATUS) == "mr/v1/dev/+/status"
    assert shared_subscription("gw", DEVICE_TREE) == "$share/gw/mr/v1/dev/#"
    assert ROOM_STATE_SUBSCRIPTION == "mr/v1/room/+/state"
    assert GATEWAY_SUBSCRIPTION == "mr/v1/gateway/+/+"
    assert GATEWAY_TOPIC_PREFIX == "mr/v1/gateway/"
    assert gateway_topic("gw-1", GatewayTopicKind.STATUS) == "mr/v1/gateway/gw-1/status"
    assert gateway_topic("gw-1", GatewayTopicKind.STATS) == "mr/v1/gateway/gw-1/stats"
    assert SERVER_ALERT_SUBSCRIPTION == "mr/v1/server/+/alert"
    assert SERVER_TOPIC_PREFIX == "mr/v1/server/"
    assert server_alert_topic("mamaroom-server") == "mr/v1/server/mamaroom-server/alert"
    assert watchdog_ping_topic("wd") == "mr/v1/watchdog/wd/ping"


def test_gateway_topics_round_trip() -> None:
    for kind in GatewayTopicKind:
        topic = gateway_topic("mamaroom-gateway", kind)
        assert topic.startswith(GATEWAY_TOPIC_PREFIX)
        assert parse_gateway_topic(topic) == GatewayTopic("mamaroom-gateway", kind)


@pytest.mark.parametrize(
    "topic",
    [
        "mr/v1/gateway/gw/other",
        "mr/v1/gateway/gw",
        "mr/v1/gateway/gw/stats/x",
        "mr/v1/gateway//stats",
        "mr/v1/dev/gw/status",
        "mr/v2/gateway/gw/stats",
        "",
    ],
)
def test_other_topics_are_not_gateway_topics(topic: str) -> None:
    with pytest.raises(ValueError):
        parse_gateway_topic(topic)


def test_the_call_status_vocabulary_is_one_enum_in_order() -> None:
    assert [s.value for s in CallStatus] == ["received", "acknowledged", "arrived", "resolved"]
    assert CallAck.model_fields["status"].annotation is CallStatus
    shown = parse_payload(Kind.CALL, _payload(action="shown", call_id="c", status="arrived"))
    assert isinstance(shown, Call) and shown.status is CallStatus.ARRIVED
    with pytest.raises(ContractError):
        parse_payload(Kind.CALL, _payload(action="shown", call_id="c", status="cancelled"))
    assert dumps(CallAck(call_id="c", status=CallStatus.RECEIVED)) == (
        b'{"cmd":"call_ack","call_id":"c","status":"received"}'
    )


@pytest.mark.parametrize(
    "test, expected",
    [(True, True), (False, False), ("yes", False), (1, False), (None, False), ({}, False)],
)
def test_a_calls_test_marker_never_refuses_the_call(test: object, expected: bool) -> None:
    call = parse_payload(Kind.CALL, _payload(action="press", call_id="c", test=test))
    assert isinstance(call, Call) and call.test is expected
    plain = parse_payload(Kind.CALL, _payload(action="press", call_id="c"))
    assert isinstance(plain, Call) and plain.test is False


def test_every_command_is_modelled() -> None:
    assert set(COMMANDS) == {"call_ack", "test_mode", "identify", "ota"}
    assert parse_command(b'{"cmd":"test_mode","on":true}') == SetTestMode(on=True, minutes=60)
    assert parse_command(b'{"cmd":"identify"}') == Identify(seconds=10)
    ota = OtaCommand(
        url="http://10.0.0.1:8000/api/firmware/1.2.0.bundle",
        sha256="ab" * 32,
        version="1.2.0",
        size=1000,
    )
    assert parse_command(dumps(ota)) == ota
    assert json.loads(dumps(ota)) == {
        "cmd": "ota",
        "url": ota.url,
        "sha256": ota.sha256,
        "version": "1.2.0",
        "size": 1000,
    }
    for bad in (
        b'{"cmd":"reboot"}',
        b'{"on":true}',
        b"[]",
        b"x",
        b'{"cmd":"identify","seconds":0}',
        b'{"cmd":"test_mode","on":"yes"}',
        b'{"cmd":"ota","url":"https://x","sha256":"' + b"a" * 64 + b'","version":"1"}',
        b'{"cmd":"identify"' + b" " * MAX_PAYLOAD_BYTES + b"}",
    ):
        with pytest.raises(ValueError):
            parse_command(bad)


def test_the_gateway_stats_payload_round_trips() -> None:
    metrics = GatewayMetrics()
    metrics.received.labels("call").inc(3)
    metrics.rejected.labels(RejectReason.NOT_JSON.value).inc(2)
    stats = GatewayStats.model_validate_json(dumps(metrics.summary()))
    assert stats.received == 3 and stats.stored == 0 and stats.dead_letters == 0
    assert stats.rejected == {
        r.value: (2 if r is RejectReason.NOT_JSON else 0) for r in RejectReason
    }
    assert stats.flagged == {"ts_out_of_range": 0}
    # The figures the server's /metrics repeats, by these names (mamaroom_gateway_<name>).
    assert set(GatewayStats.figures()) == {
        "received",
        "stored",
        "duplicates",
        "redelivered",
        "pending",
        "spool_depth",
        "spool_age_s",
        "dead_letters",
    }
    assert all(getattr(stats, name) is not None for name in GatewayStats.figures())
    # A gateway of another release: what it has is kept, what it lacks left out.
    older = GatewayStats.model_validate_json(b'{"received": 5, "extra": 1}')
    assert older.received == 5 and older.spool_depth is None and older.rejected == {}
