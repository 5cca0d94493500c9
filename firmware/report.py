# What the node tells the server, over MQTT: call events (a `press` every 3 s
# until received; presence, reset and shown in order), occupancy (on change
# and every occupancy_s), telemetry (every telemetry_s), with `seq` strictly
# increasing within a boot and `ts` from NTP (null until synced). The clock
# is kept here too, one non-blocking step at a time.
import gc
import socket

from contract import call, envelope, occupancy
from log import exc, log
from mqtt import MQTTError
from node import up
from ticks import ticks_add, ticks_diff, ticks_ms
from version import VERSION


def _ts(node):
    e = node.epoch
    return None if e is None else e[0] + ticks_diff(ticks_ms(), e[1])


def _envelope(node):
    node.seq += 1
    return envelope(node.boot, node.seq, _ts(node))


async def publisher(node):
    """Woken by node.wake (an asyncio.Event): an event (press, staff key,
    cmd) or the panel every 100 ms. (Not polled: a task that looks every few
    ms costs the board as much as all the others together.)"""
    c = node.calls
    due = node.due  # kind -> ticks when due; None: now
    topics = node.topics
    mqtt = node.mqtt
    while True:
        await node.wake.wait()
        node.wake.clear()
        now = ticks_ms()
        node.sup.beat("publisher")
        clock(node, now)
        if mqtt:
            mqtt.urgent = c.active()  # a call open: reconnect within seconds (mqtt.py)
        state, still_s, stale, stuck = node.radar.status(now)
        occ = node.fusion.update(node.door.value, "none" if stuck else state, now)
        if occ != node.occ:
            log("INFO", "occupied %s (%s)" % occ)
            node.occ = occ
            due["occupancy"] = None
        if node.error:  # config.json is wrong: no network, and say so now and then
            if due["telemetry"] is None or ticks_diff(now, due["telemetry"]) >= 0:
                due["telemetry"] = ticks_add(now, 60000)
                log("ERROR", node.error)
            continue
        if node.cfg["ntp"]:
            _ntp(node, now)
        if not up(node):
            continue
        try:
            # One message at a time, built, sent and dropped: never several
            # payloads in the heap at once.
            sent = False
            if c.press_due(now):
                c.pressed_at = now
                await mqtt.publish_json(
                    topics["call"], call(_envelope(node), "press", c.id, test=c.test)
                )
                sent = True
            for kind, every in (("occupancy", "occupancy_s"), ("telemetry", "telemetry_s")):
                if due[kind] is None or ticks_diff(now, due[kind]) >= 0:
                    due[kind] = ticks_add(now, node.cfg[every] * 1000)
                    if kind == "occupancy":
                        msg = occupancy(_envelope(node), occ[0], occ[1], state, still_s)
                    else:
                        msg = health(node, now, state, stale, stuck)
                    # Not kept for a resend after a reconnect (the state is sent
                    # afresh then): built in the client's one buffer.
                    pid = await mqtt.publish_json(topics[kind], msg, False)
                    msg = None
                    if kind == "telemetry":  # trial.py: proven once its PUBACK comes
                        mqtt.watch = pid  # (no await since it was written: not yet come)
                        mqtt.watched = False
                    sent = True
            item = c.next_out()
            while item:
                if item[0] != "shown":
                    c.acted_at = now
                await mqtt.publish_json(topics["call"], call(_envelope(node), *item))
                c.sent()
                sent = True
                item = c.next_out()
            item = c.action_due(now)
            if item:  # presence or reset again, until the server's status catches up
                c.acted_at = now
                await mqtt.publish_json(topics["call"], call(_envelope(node), item, c.id))
                sent = True
            if sent:
                gc.collect()  # now, while little is live: fewer holes later
        except MQTTError:
            due["occupancy"] = due["telemetry"] = None  # again once back; the press too
            c.pressed_at = c.acted_at = None
        except MemoryError:
            # The heap too fragmented for one message: collect and try again
            # at the next wake (100 ms), keeping every timer where it was.
            # What was not sent is sent then: the press, the call's events.
            c.pressed_at = c.acted_at = None
            due["occupancy"] = None  # the state again (telemetry waits its turn)
            gc.collect()
            log("WARN", "publisher: out of memory; again in a moment")


def clock(node, now):
    """Uptime and the wall clock moved on by the step since the last pass
    (~100 ms). Ticks wrap at 2**30 ms on the ESP32 and a difference is only
    meaningful within 2**29 ms (6.2 days): nothing is ever taken as one
    ticks_diff over the whole boot."""
    d = ticks_diff(now, node.ticks)
    if d >= 1000:
        s = d // 1000
        node.uptime_s += s
        node.ticks = ticks_add(node.ticks, s * 1000)
    e = node.epoch
    if e is not None:
        d = ticks_diff(now, e[1])
        if d > 3600000:  # NTP silent for an hour: the clock's base moved up
            node.epoch = (e[0] + d, now)


def health(node, now, state, stale, stuck):
    """The telemetry message, envelope included: one dict built whole after
    a collection (one block of the heap, not one grown key by key)."""
    gc.collect()
    last = node.radar.last or (0, 0, None, 0, None)
    p = node.radar.parser
    t = node.test_until
    # The heap as a board has it (docs/firmware.md, "Reset causes and heap
    # figures on a board"): heap_free is what the node can still allocate,
    # the heap's free bytes and what it can still grow by (heap_grow: on the
    # ESP32 the IDF heap's largest free block, less what Wi-Fi and TLS need;
    # 0 on the unix port's fixed heap); idf_free, the IDF heap's free bytes
    # (null on the unix port).
    free, grow, idf = node.board.heap()
    node.seq += 1
    return {
        "v": 1,
        "boot": node.boot,
        "seq": node.seq,
        "ts": _ts(node),
        "uptime_s": node.uptime_s,
        "rssi": node.board.link()[1],
        "heap_free": free + grow,
        "heap_grow": grow,
        "idf_free": idf,
        "fw": VERSION,
        "reset_reason": node.reset_reason,
        "radar": state,
        "radar_move_energy": last[2],
        "radar_still_energy": last[4],
        "radar_dropped": p.dropped,
        "radar_stale": stale,
        "radar_stuck": stuck,
        "radar_config": node.radar_cfg,
        "restarts": node.sup.restarts,
        "mqtt_connects": node.mqtt.connects,
        "ntp": node.epoch is not None,
        "test_mode": t is not None and ticks_diff(t, now) > 0,
        "ota": node.ota_note,
    }


# NTP: wall-clock time from the site's own server (SNTP over UDP, RFC 4330), in
# steps that never wait: _ntp() asks, then looks for the answer every 100 ms.
NTP_DELTA = 2208988800  # 1900-01-01 to 1970-01-01, in seconds


def ntp_parse(data):
    """ms since the Unix epoch from a server's answer, or None if it is not one."""
    if len(data) < 48 or data[0] & 7 != 4 or data[1] == 0:  # not a server, or kiss-o'-death
        return None
    secs = int.from_bytes(data[40:44], "big")
    if secs == 0:
        return None
    return (secs - NTP_DELTA) * 1000 + (int.from_bytes(data[44:48], "big") * 1000 >> 32)


def ntp_request(host, port=123):
    """A UDP socket with the question sent (`host` is an IP address: config.py)."""
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    q = bytearray(48)
    q[0] = 0x23  # leap 0, version 4, mode 3 (client)
    try:
        s.sendto(q, addr)
    except OSError:
        s.close()
        raise
    return s


def ntp_answer(s):
    """Epoch ms if the answer is there, else None."""
    try:
        return ntp_parse(s.recv(64))
    except OSError:  # nothing yet (or the port is closed)
        return None


def _ntp(node, now):
    """One step of keeping the clock: ask, or look for the answer."""
    cfg = node.cfg
    due = node.due
    q = node.ntp  # (socket, ticks sent) while an exchange is under way
    if q:
        ms = ntp_answer(q[0])
        if ms is None and ticks_diff(now, q[1]) < 2000:
            return
        q[0].close()
        node.ntp = None
        if ms is not None:
            if node.epoch is None:
                log("INFO", "ntp: clock set from " + cfg["ntp"])
            node.epoch = (ms + ticks_diff(now, q[1]) // 2, now)
        due["ntp"] = ticks_add(now, cfg["ntp_every_s"] * 1000 if node.epoch else 30000)
    elif due["ntp"] is None or ticks_diff(now, due["ntp"]) >= 0:
        due["ntp"] = ticks_add(now, 30000)
        try:
            node.ntp = (ntp_request(cfg["ntp"], cfg["ntp_port"]), now)
        except OSError as e:
            exc("ntp: " + cfg["ntp"], e)
