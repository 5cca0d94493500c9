# What the server says to the node on its `cmd` topic, and what happens when
# the connection is (again) up. A malformed command is ignored with a log
# line; one the node does not know, too.
#   call_ack   {"call_id", "status"}: the lamp shows it; reported with `shown`
#   test_mode  {"on", "minutes"}: commissioning; presses go out marked `test`
#   identify   {"seconds"}: the status LED blinks fast, to find the node
#   ota        {"url", "sha256", "version"}: an update (ota.py)
import asyncio
import gc
import sys

from contract import parse_cmd
from log import exc, log
from node import show
from ticks import ticks_add, ticks_ms


def attach(node, client):
    client.ctx = node
    client.on_msg = on_msg
    client.on_up = on_up


def on_up(node):
    """Connected (again): the state now, a pending press at once. (An update
    on trial is confirmed by trial.py, not by getting online.)"""
    node.due["occupancy"] = node.due["telemetry"] = None
    node.calls.pressed_at = node.calls.acted_at = None
    node.wake.set()


def on_msg(node, topic, payload):
    cmd = parse_cmd(payload)
    if cmd is None:
        log("WARN", "cmd ignored: malformed (%d bytes)" % len(payload))
        return
    name = cmd["cmd"]
    now = ticks_ms()
    if name == "call_ack":
        status = node.calls.ack(cmd["call_id"], cmd["status"])
        if status:
            log("INFO", "call %s: %s" % (cmd["call_id"], status))
            show(node)
            node.wake.set()
    elif name == "test_mode":
        node.test_until = ticks_add(now, int(cmd.get("minutes", 60) * 60000)) if cmd["on"] else None
        log("INFO", "test mode %s" % cmd["on"])
        node.due["telemetry"] = None
    elif name == "identify":
        node.identify_until = ticks_add(now, cmd.get("seconds", 10) * 1000)
    elif name == "ota" and not node.ota_busy:
        node.ota_busy = True
        node.ota_task = asyncio.create_task(_ota(node, cmd))
    else:
        log("WARN", "cmd ignored: %s" % name)


# ota.py and its download need this much free heap; with less, loading it
# could leave the node itself short (the qstrs it interns are never freed).
# Counted as the board has it: free in the heap, plus what it can still grow
# by (the ESP32's heap takes more areas from the IDF heap when it runs
# short; board.heap() leaves out what Wi-Fi and TLS need there).
OTA_FREE = 16384


async def _ota(node, cmd):
    try:
        gc.collect()
        free, grow, _ = node.board.heap()
        if free + grow < OTA_FREE:
            raise MemoryError("%d bytes of heap free, an update needs %d" % (free + grow, OTA_FREE))
        import ota

        await ota.update(node, cmd)
    except Exception as e:
        exc("ota: refused", e)
        node.ota_note = "refused %s: %s" % (cmd.get("version"), e)
        node.due["telemetry"] = None
    finally:
        node.ota_busy = False
        sys.modules.pop("ota", None)  # loaded for one update: its memory back, even half-loaded
