"""Whole nodes: the firmware on the real MicroPython unix port (72 KB heap,
precompiled with mpy-cross) against a real Mosquitto, its room driven over
the unix board's control port, a stand-in server checking every message
with the contract's parsers."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.contract import Kind, device_topic
from tests.firmware.nodes import Node, Server, now_ms, seqs_increase
from tests.support import Mosquitto, free_port, wait_for

NodeFactory = Callable[..., Node]


def calls(server: Server, device: str, action: str, call_id: str | None = None) -> list[Any]:
    return [
        m
        for m in server.of(device, "call")
        if m["action"] == action and (call_id is None or m["call_id"] == call_id)
    ]


def retained_status(port: int, device: str) -> str:
    """What a newcomer reads on the node's status topic (it must be retained)."""
    got: list[bytes | bytearray] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"look-{free_port()}")
    c.on_connect = lambda c, *_: c.subscribe(device_topic(device, Kind.STATUS), qos=1)
    c.on_message = lambda _c, _u, m: got.append(m.payload) if m.retain else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        return wait_for(
            lambda: got[-1].decode() if got else None, timeout=15, what="retained status"
        )
    finally:
        c.disconnect()
        c.loop_stop()


def test_boot_online_retained_telemetry_and_last_will(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    node = node_factory(keepalive_s=5)
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online", what="birth online")
    assert retained_status(broker.port, dev) == "online"
    tele = server.wait(dev, "telemetry", what="first telemetry", timeout=30)
    for key in (
        "uptime_s",
        "rssi",
        "heap_free",
        "fw",
        "reset_reason",
        "radar",
        "radar_move_energy",
        "radar_still_energy",
    ):
        assert key in tele, key
    assert tele["ts"] is None  # no NTP server configured: no clock, and it says so
    assert tele["heap_free"] > 0 and tele["fw"] == "1.0.0"
    # The unix port's heap is one fixed area: nothing to grow into, no IDF heap.
    assert tele["heap_grow"] == 0 and tele["idf_free"] is None
    assert node.logged("mqtt: online at")
    assert node.ctl("led?") == "led online"
    # Gone without a word (a power cut): the broker's last will says so.
    assert node.proc is not None
    node.proc.kill()
    server.wait(dev, "status", lambda s: s == "offline", timeout=30, what="last will")
    assert retained_status(broker.port, dev) == "offline"
    assert server.rejected == []


def test_door_and_radar_occupancy_still_s_grows(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory(occupancy_s=2)
    dev = node.device
    server.wait(dev, "occupancy", lambda m: m["occupied"] is False, what="free at boot")
    assert node.ctl("door locked") == "ok"
    m = server.wait(
        dev,
        "occupancy",
        lambda m: m["occupied"] and m["source"] == "door",
        what="door locked → occupied",
    )
    assert m["radar"] == "none"
    assert node.ctl("door unlocked") == "ok"
    assert node.ctl("radar still 120") == "ok"
    # The radar's bytes go through the UART reader: a still mother, behind an unlocked door.
    first = server.wait(
        dev,
        "occupancy",
        lambda m: m["source"] == "radar" and m["radar"] == "still",
        what="radar still → occupied",
    )
    assert first["occupied"] is True
    later = server.wait(
        dev,
        "occupancy",
        lambda m: m["radar"] == "still" and m["still_s"] >= first["still_s"] + 3,
        what="still_s growing",
        timeout=40,
    )
    assert later["occupied"] is True
    assert node.ctl("radar moving 200") == "ok"
    server.wait(
        dev,
        "occupancy",
        lambda m: m["radar"] == "moving" and m["still_s"] == 0,
        what="she moved: still_s back to 0",
    )
    assert node.ctl("radar none 0") == "ok"
    server.wait(
        dev,
        "occupancy",
        lambda m: m["occupied"] is False and m["seq"] > later["seq"],
        what="radar none → free after delayed_off",
    )
    assert node.ctl("radar sideways 5").startswith("error")
    occ = server.of(dev, "occupancy")
    assert seqs_increase(occ) and server.rejected == []


class Lines:
    """Some of a node's log lines, to look at as a node's."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def logged(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


def backoffs(node: Node | Lines) -> list[tuple[int, bool]]:
    """The MQTT client's waits before trying again: (ms, a call open?)."""
    found = (
        re.search(r"mqtt: again in (\d+) ms( \(a call is open\))?", line)
        for line in node.logged("mqtt: again in")
    )
    return [(int(m[1]), bool(m[2])) for m in found if m]


def press_and_wait(node: Node, server: Server) -> str:
    """Press the button; the new call's id once the server has its `press`."""
    known = {m["call_id"] for m in calls(server, node.device, "press")}
    node.press()
    wait_for(lambda: node.lamp() == "fast", timeout=10, what="lamp fast blink")
    assert node.buzzer()
    first = server.wait(
        node.device,
        "call",
        lambda m: m["action"] == "press" and m["call_id"] not in known,
        what="call press",
    )
    return str(first["call_id"])


def test_call_ack_statuses_on_the_lamp_and_shown(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory()
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    call_id = press_and_wait(node, server)
    # No ack yet: `press` again every 3 s, same call_id, a new seq.
    wait_for(
        lambda: len(calls(server, dev, "press", call_id)) >= 2, timeout=20, what="press repeated"
    )
    presses = calls(server, dev, "press", call_id)
    assert presses[1]["seq"] > presses[0]["seq"]
    node.press()  # the mother presses again: still the same call
    for status, lamp, buzzer in (
        ("received", "slow", True),
        ("acknowledged", "steady", True),
        ("arrived", "steady", False),
        ("resolved", "off", False),
    ):
        server.call_ack(dev, call_id, status)
        wait_for(
            lambda: node.lamp() == lamp,  # noqa: B023 (polled before the loop moves on)
            timeout=10,
            what=f"lamp {lamp}",
        )
        assert node.buzzer() is buzzer, status
        server.wait(
            dev,
            "call",
            lambda m, s=status: (
                m["action"] == "shown" and m["status"] == s and m["call_id"] == call_id
            ),
            what=f"shown {status}",
        )
    msgs = server.of(dev, "call")
    assert {m["call_id"] for m in msgs} == {call_id}
    first_shown = next(i for i, m in enumerate(msgs) if m["action"] == "shown")
    assert all(m["action"] != "press" for m in msgs[first_shown:])  # repeats stopped
    assert seqs_increase(msgs) and server.rejected == []
    # A new press after the call is over is a new call.
    assert press_and_wait(node, server) != call_id


def test_staff_key_presence_then_reset(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory()
    dev = node.device
    call_id = press_and_wait(node, server)
    server.call_ack(dev, call_id, "received")
    wait_for(lambda: node.lamp() == "slow", timeout=10, what="lamp slow")
    assert node.ctl("staff") == "ok"
    server.wait(
        dev,
        "call",
        lambda m: m["action"] == "presence" and m["call_id"] == call_id,
        what="presence",
    )
    assert not node.buzzer() and node.lamp() == "steady"
    assert node.ctl("staff") == "ok"
    wait_for(
        lambda: calls(server, dev, "reset", call_id), timeout=10, what="reset", detail=node.log_tail
    )
    wait_for(lambda: node.lamp() == "off", timeout=10, what="lamp off after reset")
    assert server.rejected == []


def test_broker_restart_mid_call(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    node = node_factory()
    dev = node.device
    call_id = press_and_wait(node, server)
    broker.stop()
    wait_for(
        lambda: node.logged("mqtt: 127.0.0.1"),
        timeout=60,
        what="node sees the broker gone",
        detail=node.log_tail,
    )
    # The room does not depend on the broker: the lamp and buzzer go on.
    assert node.lamp() == "fast" and node.buzzer()
    before = len(calls(server, dev, "press", call_id))
    broker.start()
    wait_for(
        lambda: len(calls(server, dev, "press", call_id)) > before,
        timeout=90,
        what="the call re-published after the broker came back",
        detail=node.log_tail,
    )
    for status, lamp in (("received", "slow"), ("acknowledged", "steady"), ("resolved", "off")):
        server.call_ack(dev, call_id, status)
        wait_for(
            lambda: node.lamp() == lamp,  # noqa: B023 (polled before the loop moves on)
            timeout=30,
            what=f"lamp {lamp}",
            detail=node.log_tail,
        )
        server.wait(
            dev,
            "call",
            lambda m, s=status: m["action"] == "shown" and m["status"] == s,
            what=f"shown {status}",
        )
    assert len(node.logged("mqtt: online at")) >= 2
    assert server.rejected == []


def test_junk_on_cmd_is_ignored(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory()
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    junk = [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"cmd": 5}',
        b"\xff\xfe\x00",
        b'{"cmd": "call_ack", "call_id": "x", "status": "eaten"}',
        b'{"cmd": "identify", "seconds": "ten"}',
        b'{"cmd": "self_destruct"}',
        json.dumps({"cmd": "call_ack", "pad": "x" * 3000}).encode(),
    ]
    for payload in junk:
        server.cmd(dev, payload)
    wait_for(
        lambda: len(node.logged("cmd ignored")) >= len(junk) - 1,
        timeout=20,
        what="a log line per junk command",
        detail=node.log_tail,
    )
    # Still a working node: a call goes out and its ack is shown.
    call_id = press_and_wait(node, server)
    server.call_ack(dev, call_id, "received")
    wait_for(lambda: node.lamp() == "slow", timeout=10, what="lamp slow")
    assert node.alive() and not node.logged("Traceback")
    assert server.rejected == []


def test_a_failing_task_is_restarted(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory()
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    for task in ("panel", "radar", "publisher", "mqtt"):
        assert node.ctl(f"fault {task}") == "ok"
        wait_for(
            lambda: node.logged(f"task {task} ended; starting it again"),  # noqa: B023 (polled before the loop moves on)
            timeout=20,
            what=f"{task} restarted",
            detail=node.log_tail,
        )
    assert node.ctl("fault nosuchtask").startswith("error")
    assert node.logged("injected fault")  # the exception was logged, not swallowed
    # The restarted panel still reads the button and drives the lamp.
    press_and_wait(node, server)
    assert node.ctl("radar still 100") == "ok"
    server.wait(dev, "telemetry", what="telemetry")
    assert node.alive()


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"broker": "http://10.0.0.1"}, "broker: must start with mqtt:// or mqtts://"),
        ({"device": "Room 1/A"}, "is not a device id"),
        ({"filters": {"door_ms": "fast"}}, "filters.door_ms: must be a whole number"),
        # A host name would be looked up with a blocking call: refused, clearly.
        ({"broker": "mqtt://mqtt.park.local:1883"}, "'mqtt.park.local' is a host name"),
        ({"ntp": "pool.ntp.org"}, "ntp: 'pool.ntp.org' is a host name"),
    ],
)
def test_a_bad_config_is_reported_and_the_room_still_works(
    node_factory: NodeFactory, bad: dict[str, Any], words: str
) -> None:
    node = node_factory(**bad)
    wait_for(lambda: node.logged(words), timeout=15, what="a clear log line", detail=node.log_tail)
    assert node.logged("ERROR config.json:")
    assert node.ctl("led?") == "led config"  # three blinks on the status LED
    node.press()
    wait_for(lambda: node.lamp() == "fast", timeout=10, what="lamp without a network")
    assert node.buzzer() and node.alive()


class SNTP:
    """A tiny SNTP server (RFC 4330) on a free UDP port: the site's own clock."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(64)
            except (TimeoutError, OSError):
                continue
            ms = now_ms()
            secs, frac = divmod(ms, 1000)
            answer = bytearray(48)
            answer[0] = 0x24  # version 4, mode 4 (server)
            answer[1] = 2  # stratum
            answer[24:32] = data[40:48]  # the client's transmit time, echoed
            answer[40:44] = (secs + 2208988800).to_bytes(4, "big")
            answer[44:48] = (frac * 2**32 // 1000).to_bytes(4, "big")
            self.sock.sendto(bytes(answer), addr)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def sntp() -> Iterator[SNTP]:
    s = SNTP()
    yield s
    s.close()


def test_time_from_the_sites_ntp_server(
    node_factory: NodeFactory, server: Server, sntp: SNTP
) -> None:
    node = node_factory(ntp="127.0.0.1", ntp_port=sntp.port, occupancy_s=1)
    dev = node.device
    wait_for(
        lambda: node.logged("ntp: clock set"), timeout=30, what="clock set", detail=node.log_tail
    )
    m = server.wait(dev, "occupancy", lambda m: m["ts"] is not None, what="a stamped message")
    assert abs(m["ts"] - now_ms()) < 10_000


def test_a_call_not_yet_received_survives_a_reboot(
    node_factory: NodeFactory, server: Server
) -> None:
    node = node_factory()
    dev = node.device
    call_id = press_and_wait(node, server)
    assert node.proc is not None
    node.proc.kill()  # a power cut, before the server said `received`
    node.proc.wait()
    before = len(calls(server, dev, "press", call_id))
    node.start()  # same directory: same flash
    wait_for(lambda: node.lamp() == "fast", timeout=10, what="the lamp at once after boot")
    assert node.buzzer()
    wait_for(
        lambda: len(calls(server, dev, "press", call_id)) > before,
        timeout=30,
        what="the same call pressed again",
        detail=node.log_tail,
    )
    boots = {m["boot"] for m in calls(server, dev, "press", call_id)}
    assert len(boots) == 2  # the boot counter moved on; the call_id did not
    assert node.logged(f"call {call_id} restored")
    server.call_ack(dev, call_id, "received")
    wait_for(lambda: node.lamp() == "slow", timeout=10, what="lamp slow")


def test_test_mode_and_identify(node_factory: NodeFactory, server: Server) -> None:
    node = node_factory()
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    server.cmd(dev, {"cmd": "identify", "seconds": 30})
    wait_for(lambda: node.ctl("led?") == "led identify", timeout=10, what="identify blink")
    server.cmd(dev, {"cmd": "test_mode", "on": True, "minutes": 5})
    wait_for(
        lambda: (
            server.of(dev, "telemetry") and server.of(dev, "telemetry")[-1].get("test_mode") is True
        ),
        timeout=15,
        what="telemetry says test mode",
    )
    call_id = press_and_wait(node, server)
    assert all(m.get("test") is True for m in calls(server, dev, "press", call_id))
    assert server.rejected == []


def test_presence_and_reset_are_repeated_until_the_server_has_them(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    node = node_factory(telemetry_s=1)
    dev = node.device
    call_id = press_and_wait(node, server)
    server.call_ack(dev, call_id, "received")
    wait_for(lambda: node.lamp() == "slow", timeout=10, what="lamp slow")
    server.close()  # the server is unreachable: what the node says now reaches nobody
    assert node.ctl("staff") == "ok" and node.ctl("staff") == "ok"
    wait_for(lambda: node.lamp() == "off", timeout=10, what="lamp off: reset in the room")
    back = Server(broker.port)  # the server returns
    try:
        first = back.wait(
            dev,
            "call",
            lambda m: m["action"] == "reset" and m["call_id"] == call_id,
            timeout=15,
            what="the reset, repeated",
            detail=node.log_tail,
        )
        back.call_ack(dev, call_id, "resolved")
        shown = back.wait(
            dev,
            "call",
            lambda m: m["action"] == "shown" and m["status"] == "resolved",
            what="shown resolved",
        )
        # Repeats stop: three telemetry messages later, no reset after the shown.
        n = len(back.of(dev, "telemetry"))
        wait_for(
            lambda: len(back.of(dev, "telemetry")) >= n + 3,
            timeout=20,
            what="telemetry",
            detail=node.log_tail,
        )
        resets = calls(back, dev, "reset", call_id)
        assert first in resets and all(m["seq"] < shown["seq"] for m in resets), resets
        assert back.rejected == []
    finally:
        back.close()


def test_a_call_during_a_long_outage_goes_out_within_seconds_of_the_link(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    node = node_factory()
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    server.client.reconnect_delay_set(min_delay=1, max_delay=1)  # the stand-in: back at once
    broker.stop()
    assert node.ctl("link down") == "ok"
    # The outage goes on until the node's backoff is long (16 s or more, up
    # to the 30 s cap): what an hour offline leaves behind.
    wait_for(
        lambda: any(ms >= 16000 for ms, _ in backoffs(node)),
        timeout=150,
        what="a long backoff",
        detail=node.log_tail,
    )
    node.press()  # a call, deep in the outage: the lamp at once, the network later
    wait_for(lambda: node.lamp() == "fast", timeout=10, what="lamp fast")
    broker.start()
    assert node.ctl("link up") == "ok"
    # The target: the call at the server within 10 s of the link coming back
    # (not the up to 30 s more the backoff had left).
    server.wait(
        dev,
        "call",
        lambda m: m["action"] == "press",
        timeout=10,
        what="the press within 10 s of the link",
        detail=node.log_tail,
    )
    assert node.alive() and server.rejected == []


def test_with_a_call_open_the_broker_is_tried_every_few_seconds(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    # The broker away, the Wi-Fi up all along (nothing tells the node the
    # network is back): once a call is open, no wait is longer than 3 s.
    node = node_factory(env={"MAMAROOM_TICKS_FAST": "1"})  # node time: the backoff in seconds
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    server.client.reconnect_delay_set(min_delay=1, max_delay=1)
    broker.stop()
    wait_for(
        lambda: any(ms >= 16000 for ms, _ in backoffs(node)),
        timeout=60,
        what="a long backoff",
        detail=node.log_tail,
    )
    node.press()
    wait_for(
        lambda: sum(urgent for _, urgent in backoffs(node)) >= 3,
        timeout=60,
        what="backoffs with the call open",
        detail=node.log_tail,
    )
    waits = backoffs(node)
    first = next(i for i, (_, urgent) in enumerate(waits) if urgent)
    assert all(urgent and ms <= 3000 for ms, urgent in waits[first:]), waits[first:]
    broker.start()
    server.wait(
        dev,
        "call",
        lambda m: m["action"] == "press",
        timeout=60,
        what="the press once the broker is back",
        detail=node.log_tail,
    )
    assert node.alive() and server.rejected == []


def test_the_link_coming_back_ends_the_backoff_at_once(
    node_factory: NodeFactory, server: Server, broker: Mosquitto
) -> None:
    node = node_factory(env={"MAMAROOM_TICKS_FAST": "1"})  # node time: the backoff in moments
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    broker.stop()
    assert node.ctl("link down") == "ok"
    wait_for(
        lambda: any(ms >= 16000 for ms, _ in backoffs(node)),
        timeout=60,
        what="a long backoff",
        detail=node.log_tail,
    )
    assert node.ctl("link up") == "ok"  # as board/esp32.py's wifi task on the link's return
    # At once, and the backoff afresh: the next wait (the broker is still
    # away) is the first step's, 0.5 to 1 s, not the 16 to 30 s it was at.
    wait_for(
        lambda: node.logged("mqtt: the link is back: connecting now"),
        timeout=60,
        what="the backoff ended by the link",
        detail=node.log_tail,
    )
    back = node.lines.index(node.logged("mqtt: the link is back")[0])
    wait_for(
        lambda: backoffs(Lines(node.lines[back:])),
        timeout=60,
        what="a backoff after the link",
        detail=node.log_tail,
    )
    assert backoffs(Lines(node.lines[back:]))[0][0] <= 1000, node.log_tail()
    broker.start()
    wait_for(
        lambda: len(node.logged("mqtt: online at")) >= 2,
        timeout=60,
        what="online again",
        detail=node.log_tail,
    )


def test_a_press_while_the_loop_is_blocked_is_counted(
    node_factory: NodeFactory, server: Server
) -> None:
    node = node_factory()
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    assert node.ctl("block 300") == "ok"  # blocked, nothing pressed: nothing happens
    assert node.lamp() == "off"
    # Pressed and released while the loop is blocked for 0.6 s: when it runs
    # again the button reads released; only the interrupt's latch saw it.
    assert node.ctl("block 600 press") == "ok"
    wait_for(
        lambda: node.lamp() == "fast", timeout=10, what="the press counted", detail=node.log_tail
    )
    call = server.wait(dev, "call", lambda m: m["action"] == "press", what="the press")
    server.call_ack(dev, call["call_id"], "received")
    assert node.ctl("block 600 staff") == "ok"  # the staff key too
    server.wait(
        dev, "call", lambda m: m["action"] == "presence", what="presence", detail=node.log_tail
    )
    assert len(node.logged("EMERGENCY CALL")) == 1  # counted once


def test_the_radar_is_configured_at_boot_with_bluetooth_off(
    node_factory: NodeFactory, server: Server
) -> None:
    settings = {"move_gate": 6, "still_gate": 5, "move_sens": 45, "still_sens": 35}
    node = node_factory(radar=settings)
    dev = node.device
    wait_for(
        lambda: node.logged(
            "radar: configured: bluetooth off, gates 6/5, sensitivity 45/35, read back"
        ),
        timeout=20,
        what="the radar configured",
        detail=node.log_tail,
    )
    # What the simulated LD2410 was told, command by command, each acknowledged.
    assert node.ctl("radar?") == "radar bluetooth off gates 6 5 sens 45 35"
    tele = server.wait(dev, "telemetry", what="telemetry", detail=node.log_tail)
    assert tele["radar_config"] is True
    # Its data frames come again after the restart that ends the setup.
    assert node.ctl("radar still 150") == "ok"
    server.wait(
        dev,
        "occupancy",
        lambda m: m["radar"] == "still",
        what="radar data again",
        detail=node.log_tail,
    )


@pytest.mark.parametrize(
    "radar, why",
    [
        # It acknowledges the sensitivities but keeps its own: the read-back says so.
        ("ignore:64", "read back: move_sens 50 at gate 0, config.json says 45"),
        # It refuses Bluetooth off: said, and the restart still sent (data again).
        ("refuse:a4", "bluetooth off refused (status 1)"),
    ],
)
def test_a_radar_that_does_not_take_its_settings_is_reported(
    node_factory: NodeFactory, server: Server, radar: str, why: str
) -> None:
    settings = {"move_gate": 6, "still_gate": 5, "move_sens": 45, "still_sens": 35}
    node = node_factory(radar=settings, env={"MAMAROOM_SIM_RADAR": radar})
    dev = node.device
    wait_for(
        lambda: node.logged("radar: not configured: " + why),
        timeout=20,
        what="the radar's fault named",
        detail=node.log_tail,
    )
    tele = server.wait(dev, "telemetry", what="telemetry", detail=node.log_tail)
    assert tele["radar_config"] is False
    assert node.ctl("radar still 150") == "ok"  # out of config mode: its data used all the same
    server.wait(
        dev, "occupancy", lambda m: m["radar"] == "still", what="radar data", detail=node.log_tail
    )


def test_a_silent_publisher_or_mqtt_task_is_restarted(
    node_factory: NodeFactory, server: Server
) -> None:
    # Node time runs fast (ticks.py): the publisher's 60 s and the MQTT
    # task's 30 s of silence pass in moments. A task that hangs (here its
    # reports go unheard, `stall`) is cancelled and started again, and the
    # watchdog waits to see it keep going.
    node = node_factory(env={"MAMAROOM_TICKS_FAST": "1"})
    dev = node.device
    server.wait(dev, "status", lambda s: s == "online")
    assert node.ctl("stall radar").startswith("error")  # not watched for silence
    assert node.ctl("stall publisher") == "ok" and node.ctl("stall mqtt") == "ok"
    for task in ("publisher", "mqtt"):
        wait_for(
            lambda: node.logged(f"task {task} stalled; starting it again"),  # noqa: B023 (polled before the loop moves on)
            timeout=60,
            what=f"{task} restarted",
            detail=node.log_tail,
        )
    # The node goes on: a call goes out, telemetry counts the restarts.
    press_and_wait(node, server)
    server.wait(
        dev,
        "telemetry",
        lambda t: t["restarts"] >= 2,
        timeout=60,
        what="restarts in telemetry",
        detail=node.log_tail,
    )
    f = int(node.ctl("feeds?").split()[1])
    wait_for(
        lambda: int(node.ctl("feeds?").split()[1]) > f,
        timeout=60,
        what="the watchdog fed again",
        detail=node.log_tail,
    )
    assert node.alive() and server.rejected == []
