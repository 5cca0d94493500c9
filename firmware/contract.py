# The contract (docs/protocol.md) mirrored for MicroPython; a CPython test
# (tests/firmware/test_logic.py) checks it agrees with mamaroom/contract.py.

PREFIX = "mr/v1"
KINDS = ("status", "occupancy", "call", "telemetry", "cmd")
CALL_ACK_STATUSES = ("received", "acknowledged", "arrived", "resolved")  # in order (CallStatus)
PRESS_REPEAT_MS = 3000  # press, presence and reset again this often until caught up
MAX_PAYLOAD = 4096  # MAX_PAYLOAD_BYTES: a larger command is ignored unread
MAX_BUNDLE = 1048576  # MAX_BUNDLE_BYTES: the largest update ota.py takes


def device_topic(device, kind):
    if kind not in KINDS:
        raise ValueError("unknown kind: %s" % kind)
    return "%s/dev/%s/%s" % (PREFIX, device, kind)


def envelope(boot, seq, ts):
    """The fields every message carries; the builders below add theirs to it."""
    return {"v": 1, "boot": boot, "seq": seq, "ts": ts}


def occupancy(env, occupied, source, radar=None, still_s=None):
    env["occupied"] = occupied
    env["source"] = source
    if radar is not None:
        env["radar"] = radar
    if still_s is not None:
        env["still_s"] = still_s
    return env


def call(env, action, call_id, status=None, test=False):
    env["action"] = action
    env["call_id"] = call_id
    if status is not None:
        env["status"] = status
    if test:
        env["test"] = True  # commissioning: an extra field, ignored by whoever does not know it
    return env


def parse_cmd(payload):
    """A command dict, or None for anything malformed (ignored with a log line).
    An unknown command is returned as is: the node logs and ignores it. (An
    `ota` command is checked by ota.check, loaded only when one comes.) The
    schemas are mamaroom/contract.py's CallAck, SetTestMode, Identify, OtaCommand."""
    import json

    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        cmd = json.loads(payload)
    except (ValueError, UnicodeError):
        return None
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        return None
    name = cmd["cmd"]
    if name == "call_ack":
        cid = cmd.get("call_id")
        if (
            cmd.get("status") not in CALL_ACK_STATUSES
            or not isinstance(cid, str)
            or not 1 <= len(cid) <= 64
        ):
            return None
    elif name == "test_mode":
        m = cmd.get("minutes", 60)
        if not isinstance(cmd.get("on"), bool) or type(m) not in (int, float) or not 0 < m <= 1440:
            return None
    elif name == "identify":
        s = cmd.get("seconds", 10)
        if type(s) is not int or not 0 < s <= 600:
            return None
    return cmd
