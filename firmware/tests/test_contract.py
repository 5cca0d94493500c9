import json

from contract import call, device_topic, envelope, occupancy, parse_cmd


def test_topics_and_payloads():
    assert device_topic("n-sp1-0101", "call") == "mr/v1/dev/n-sp1-0101/call"
    msg = occupancy(envelope(7, 42, None), True, "door", radar="still", still_s=310)
    assert msg == {
        "v": 1,
        "boot": 7,
        "seq": 42,
        "ts": None,
        "occupied": True,
        "source": "door",
        "radar": "still",
        "still_s": 310,
    }
    shown = call(envelope(7, 43, 5), "shown", "b-7-43", "received")
    assert shown["status"] == "received" and shown["ts"] == 5 and "test" not in shown
    assert call(envelope(7, 44, 5), "press", "b-7-44", test=True)["test"] is True
    try:
        device_topic("n-1", "other")
        raise AssertionError("unknown kind accepted")
    except ValueError:
        pass


def test_malformed_commands_are_ignored():
    assert parse_cmd(b'{"cmd":"call_ack","call_id":"x","status":"received"}')["cmd"] == "call_ack"
    for junk in (
        b"",
        b"not json",
        b"[]",
        b'{"cmd":1}',
        b'{"cmd":"call_ack","status":"lol"}',
        b'{"cmd":"call_ack","call_id":5,"status":"received"}',
        b"\xff\xfe",
        b'{"cmd":"test_mode","on":"yes"}',
        b'{"cmd":"identify","seconds":-1}',
        b'{"cmd":"call_ack","call_id":"x","status":"received"' + b" " * 5000 + b"}",
    ):
        assert parse_cmd(junk) is None, junk
    assert json.loads(json.dumps(parse_cmd(b'{"cmd":"identify"}'))) == {"cmd": "identify"}
    # A command the node does not know is returned (logged and ignored by commands.py).
    assert parse_cmd(b'{"cmd":"reboot_now"}') == {"cmd": "reboot_now"}
