# Builds the node at boot, in the order that fits a small heap: the modules
# the node runs on first (long-lived, packed together at the bottom of the
# heap), then config.json validated (config.py is forgotten right after: its
# room is where the node's objects go), the board, the MQTT client, the node
# and its tasks. Only main() is called from outside (main.py), and this
# module is forgotten too once the node runs: boot-only code costs nothing.
import gc
import sys

from log import log


def main(path="config.json", trial=None):
    """The node's main coroutine: its tasks spawned, the supervisor's watchdog
    loop. `trial`: the OTA slot on trial (loader.py), watched by trial.py."""
    # One at a time, each followed by a collection: what an import leaves
    # behind (its reader's buffers) is freed before the next one loads, so the
    # next fills those holes instead of leaving them scattered through the
    # heap (measured in 64 KB: the largest free block at rest went from
    # ~1.5 KB to ~2.8 KB).
    for m in (
        "log",
        "contract",
        "store",
        "filters",
        "ld2410",
        "version",
        "supervisor",
        "node",
        "mqtt",
        "calls",
        "commands",
        "report",
        "board",
    ):
        __import__(m)
        gc.collect()
    import node
    import report
    from board import module

    board_class = module().Board
    gc.collect()
    import config

    error = None
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        error = str(e)
        log("ERROR", error)
        cfg = config.fallback(path)
    del config, sys.modules["config"]
    gc.collect()
    board = board_class(cfg)
    n = _node(board, cfg, error, None if error else _client(cfg))
    for k in ("pins", "filters", "wifi", "broker", "password", "ca"):
        cfg.pop(k, None)  # used; the heap is small
    sup = n.sup
    sup.spawn("panel", node.panel, n, 2000)
    sup.spawn("radar", node.radar, n)
    # The publisher and the MQTT task must report too (a hung one would
    # leave the room's calls unsent with nobody noticing): the publisher
    # every pass (~100 ms), the client every 250 ms, also while backing off.
    # The publisher may wait out a broker that stopped answering until the
    # client notices (a keepalive and 2 s): its silence allows for that.
    sup.spawn("publisher", report.publisher, n, max(60000, cfg["keepalive_s"] * 1000 + 10000))
    for name, fn in board.tasks(n):
        sup.spawn(name, fn, board)
    if n.mqtt:
        n.mqtt.sup = sup
        sup.spawn("mqtt", n.mqtt.__class__.run, n.mqtt, 30000)
    if trial:  # not supervised: it ends once the update is confirmed
        import asyncio

        import trial as t

        n.ota_note = "on trial"
        sup.trial = asyncio.create_task(t.watch(trial, n))
    del sys.modules["app"]
    gc.collect()
    return sup.watchdog()


def _node(board, cfg, error, client):
    """The node's state: every attribute of node.Node, set here."""
    import asyncio
    import os
    import random

    import commands
    import store
    from calls import Calls
    from contract import device_topic
    from filters import Delayed, Occupancy
    from ld2410 import Radar
    from node import CALL, STATUS, Light, Node, show
    from supervisor import Supervisor
    from ticks import ticks_ms
    from version import VERSION

    random.seed(int.from_bytes(os.urandom(4), "big"))
    n = Node()
    n.board = board
    n.cfg = cfg
    n.error = error  # why config.json was refused: the node then runs locally only
    n.device = dev = cfg["device"] or "unconfigured"
    n.boot = (store.load("boot") or {}).get("boot", 0) + 1  # persisted: `boot` of every message
    store.save("boot", {"boot": n.boot})
    reason = store.load("reset")  # a restart the firmware made itself (ota, rollback, crash)
    store.remove("reset")
    n.reset_reason = reason if isinstance(reason, str) else board.reset_cause
    n.seq = 0  # strictly increasing within a boot
    n.uptime_s = 0
    n.ticks = ticks_ms()  # up to which uptime_s is counted (report.clock)
    n.epoch = None  # (epoch ms, ticks) of the latest NTP answer: `ts` is null until then
    n.ntp = None  # the NTP exchange under way (report.py)
    f = cfg["filters"]
    n.door = Delayed(f["door_ms"], f["door_ms"])  # debounced
    n.button = Delayed(f["button_ms"], f["button_ms"])
    n.staff = Delayed(f["button_ms"], f["button_ms"])
    n.fusion = Occupancy(f["delayed_on_ms"], f["delayed_off_ms"])
    n.radar = Radar(f["radar_timeout_ms"], f["radar_stuck_s"] * 1000)
    n.radar_cfg = None
    n.calls = Calls(store)
    n.lamp = Light(board.out, 0, CALL)  # the corridor lamp and the button's ring
    n.led = Light(board.out, 2, STATUS)
    n.buzz = None
    n.sup = Supervisor(board.feed)
    n.test_until = n.identify_until = None  # ticks, while test mode / identify last
    n.ota_note = None  # the latest OTA outcome, for telemetry
    n.ota_busy = False
    n.ota_task = None  # the update under way (commands.py, ota.py)
    n.occ = None  # (occupied, source) last fused
    n.due = {"occupancy": None, "telemetry": None, "ntp": None}  # ticks when due; None: now
    n.wake = asyncio.Event()  # the publisher has something to do (node.Node.wake)
    n.wake.set()
    n.topics = {k: device_topic(dev, k) for k in ("occupancy", "call", "telemetry")}
    n.mqtt = client  # None when config.json was refused
    if client:
        commands.attach(n, client)
    show(n)  # a call from before a reboot is on the lamp at once
    log(
        "INFO",
        "node %s fw %s boot %d (%s) on %s" % (dev, VERSION, n.boot, n.reset_reason, board.name),
    )
    if n.calls.active():
        log("WARN", "call %s restored: %s" % (n.calls.id, n.calls.shown()))
    return n


def _client(cfg):
    from contract import device_topic
    from mqtt import Client

    dev = cfg["device"]
    status = device_topic(dev, "status")
    ctx = None
    if cfg["tls"]:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]  # (not in the stubs)
        if cfg["ca"]:
            with open(cfg["ca"], "rb") as f:
                ca = f.read()
            if ca.startswith(b"-----"):
                # PEM (make-certs.sh's ca.crt) to DER: the unix port's mbedTLS
                # parses no PEM ("invalid cert"); DER every port takes.
                from binascii import a2b_base64

                ca = a2b_base64(ca.split(b"-----")[2])
            ctx.load_verify_locations(cadata=ca)
            ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
        else:
            log("WARN", "mqtts without a CA: the broker is not verified")
    # Client id and user name are the device id: the broker's ACL pins the
    # node to its own topics. Persistent session; retained birth and will.
    return Client(
        dev,
        cfg["host"],
        cfg["port"],
        user=dev,
        password=cfg["password"] or None,
        keepalive=cfg["keepalive_s"],
        will=(status, b"offline", 1, True),
        birth=(status, b"online"),
        subs=(device_topic(dev, "cmd"),),
        ssl=ctx,
    )
