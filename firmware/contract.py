# The contract (docs/protocol.md) mirrored for MicroPython; a CPython test
# checks it agrees with mamaroom/contract.py.

PREFIX = "mr/v1"
KINDS = ("status", "occupancy", "call", "telemetry", "cmd")
CALL_ACK_STATUSES = ("received", "acknowledged", "arrived", "resolved")
PRESS_REPEAT_MS = 3000


def device_topic(device, kind):
    if kind not in KINDS:
        raise ValueError("unknown kind: %s" % kind)
    return "%s/dev/%s/%s" % (PREFIX, device, kind)


def envelope(boot, seq, ts):
    return {"v": 1, "boot": boot, "seq": seq, "ts": ts}


def occupancy(boot, seq, ts, occupied, source, radar=None, still_s=None):
    msg = envelope(boot, seq, ts)
    msg["occupied"] = occupied
    msg["source"] = source
    if radar is not None:
        msg["radar"] = radar
    if still_s is not None:
        msg["still_s"] = still_s
    return msg


def call(boot, seq, ts, action, call_id, status=None):
    msg = envelope(boot, seq, ts)
    msg["action"] = action
    msg["call_id"] = call_id
    if status is not None:
        msg["status"] = status
    return msg


def parse_cmd(payload):
    """A command dict, or None for anything malformed (ignored with a log line)."""
    import json

    try:
        cmd = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        return None
    if cmd["cmd"] == "call_ack" and (cmd.get("status") not in CALL_ACK_STATUSES
                                     or not isinstance(cmd.get("call_id"), str)):
        return None
    return cmd
