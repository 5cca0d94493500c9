import json

from contract import call, device_topic, occupancy, parse_cmd


def test_topics_and_payloads():
    assert device_topic("n-sp1-0101", "call") == "mr/v1/dev/n-sp1-0101/call"
    msg = occupancy(7, 42, None, True, "door", radar="still", still_s=310)
    assert msg == {"v": 1, "boot": 7, "seq": 42, "ts": None, "occupied": True,
                   "source": "door", "radar": "still", "still_s": 310}
    assert call(7, 43, 5, "shown", "b-7-43", "received")["status"] == "received"


def test_malformed_commands_are_ignored():
    assert parse_cmd(b'{"cmd":"call_ack","call_id":"x","status":"received"}')["cmd"] == "call_ack"
    for junk in (b"", b"not json", b"[]", b'{"cmd":1}', b'{"cmd":"call_ack","status":"lol"}',
                 b'{"cmd":"call_ack","call_id":5,"status":"received"}'):
        assert parse_cmd(junk) is None, junk
    assert json.loads(json.dumps(parse_cmd(b'{"cmd":"identify"}'))) == {"cmd": "identify"}
