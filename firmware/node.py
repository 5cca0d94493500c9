# The room node: a few asyncio tasks kept alive by the supervisor.
#   panel      buttons, door switch, call lamp, buzzer and status LED (every 10 ms)
#   radar      the LD2410's bytes from the UART into the frame parser
#   publisher  call events, occupancy, telemetry and NTP (report.py)
#   mqtt       the broker connection (mqtt.py), commands from it (commands.py)
#   and the board's own (Wi-Fi on the ESP32, the simulation on the unix port).
# The board (board/esp32.py or board/unix.py) is handed in; nothing here
# knows which one it is. app.py builds the node at boot and lists its state.
#
# The button, the lamp and the buzzer never wait for the network: a press
# lights the lamp and sounds the buzzer in the same step that notices it;
# the publisher picks the call up afterwards.
import asyncio
import random

from log import log
from ticks import ticks_diff, ticks_ms

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

    from calls import Calls
    from filters import Delayed, Occupancy
    from ld2410 import Radar
    from mqtt import Client
    from supervisor import Supervisor

# Blink patterns, as (on ms, off ms, on ms, ...) repeating; () is off and
# (1,) steady. The call lamp (the corridor lamp and the button's ring, always
# together) shows the call; the status LED shows the node's health.
CALL = {"off": (), "fast": (150, 150), "slow": (600, 600), "steady": (1,)}
STATUS = {
    "config": (100, 150, 100, 150, 100, 1400),  # three blinks: config.json is wrong
    "wifi": (500, 500),  # no Wi-Fi
    "broker": (100, 150, 100, 1150),  # two blinks: Wi-Fi, but no broker
    "online": (40, 2960),  # a short blink every 3 s: all well
    "identify": (60, 60),  # someone asked which node this is
}


def level(seq, t):
    """On or off, `t` ms into the pattern."""
    if len(seq) < 2:
        return len(seq) == 1
    t %= sum(seq)
    on = True
    for d in seq:
        if t < d:
            return on
        t -= d
        on = not on
    return False


class Light:
    """Output `index` of the board playing a named pattern; a new name
    restarts it at once."""

    def __init__(self, out, index, patterns):
        self.out = out  # the board's out(index, on)
        self.index = index
        self.patterns = patterns
        self.name = None
        self._since = 0
        self._on = None

    def set(self, name, now):
        if name != self.name:
            self.name = name
            self._since = now
        # (A pattern that runs for days jumps in phase once every 6.2 days,
        # when ticks_diff wraps: harmless.)
        on = level(self.patterns.get(name, ()), ticks_diff(now, self._since))
        if on != self._on:
            self._on = on
            self.out(self.index, on)


class Node:
    """The node's state (app.py sets it up); plain attributes, no methods:
    on a small heap every function counts. (The annotations are for the
    type check against the MicroPython stubs; MicroPython compiles them to
    nothing.)"""

    board: Any  # board/esp32.py or board/unix.py
    cfg: dict  # config.json, validated (config.py)
    error: str | None  # why config.json was refused: then the room works locally only
    device: str
    boot: int
    reset_reason: str
    seq: int
    uptime_s: int  # added up a second at a time (report.clock): ticks wrap
    ticks: Any  # ticks_ms() up to which uptime_s is counted
    epoch: tuple | None  # (epoch ms, ticks) of the latest NTP answer
    ntp: tuple | None  # (socket, ticks) of the NTP exchange under way
    door: Delayed
    button: Delayed
    staff: Delayed
    fusion: Occupancy
    radar: Radar
    radar_cfg: bool | None  # the LD2410 set up at boot (radarcfg.py); None: not yet
    calls: Calls
    lamp: Light
    led: Light
    buzz: bool | None
    sup: Supervisor
    test_until: int | None
    identify_until: int | None
    ota_note: str | None
    ota_busy: bool
    ota_task: Any
    occ: tuple | None  # (occupied, source), the latest fused
    due: dict  # kind -> ticks when due, None: now
    wake: Any  # asyncio.Event: the publisher has something to do
    topics: dict
    mqtt: Client | None


def up(n):
    return n.mqtt is not None and n.mqtt.up


def show(n):
    """The call's lamp pattern and buzzer, now."""
    lamp, buzz = n.calls.view()
    n.lamp.set(lamp, ticks_ms())
    if buzz != n.buzz:
        n.buzz = buzz
        n.board.out(1, buzz)


async def panel(n):
    b = n.board
    c = n.calls
    tick = 0
    while True:
        now = ticks_ms()
        n.sup.beat("panel")
        door, button, staff = b.inputs()
        # An edge the board's interrupt latched counts as held until the
        # debounce has taken it: a press while the loop was blocked (a TLS
        # handshake, a flash erase) is never lost. The debounce stays here.
        lt = b.latched
        n.door.update(door, now)
        was = n.button.value
        if n.button.update(button or lt[0], now) and not was:
            t = n.test_until
            new = c.press(
                "%s-%d-%d-%06x" % (n.device, n.boot, n.seq + 1, random.getrandbits(24)),
                t is not None and ticks_diff(t, now) > 0,
            )
            show(n)  # lamp and buzzer first; then the flash (it can take 100s of ms)
            c.save()
            if new:
                log("WARN", "EMERGENCY CALL %s%s" % (c.id, " (test)" if c.test else ""))
                n.wake.set()
        if n.button.value:
            lt[0] = False
        was = n.staff.value
        if n.staff.update(staff or lt[1], now) and not was:
            action = c.staff_key()
            show(n)
            c.save()
            log("INFO", "staff key: %s %s" % (action, c.id))
            n.wake.set()
        if n.staff.value:
            lt[1] = False
        n.lamp.set(n.lamp.name, now)
        tick += 1
        if tick % 2 == 0:  # the status LED, every 20 ms
            # Over: forgotten, else the same ticks come round again 12 days on.
            t = n.test_until
            if t is not None and ticks_diff(t, now) <= 0:
                n.test_until = None
            t = n.identify_until
            if t is not None and ticks_diff(t, now) <= 0:
                n.identify_until = t = None
            if n.error:
                name = "config"
            elif t is not None and ticks_diff(t, now) > 0:
                name = "identify"
            elif not b.link()[0]:
                name = "wifi"
            else:
                name = "online" if up(n) else "broker"
            n.led.set(name, now)
        if tick % 10 == 0:
            n.wake.set()  # the publisher looks at its timers every 100 ms
        await asyncio.sleep_ms(10)


async def radar(n):
    uart = n.board.uart
    if n.radar_cfg is None:  # once a boot (the supervisor may start this again)
        import sys

        import radarcfg

        n.radar_cfg = False
        why = await radarcfg.setup(uart, n.cfg["radar"])
        del radarcfg, sys.modules["radarcfg"]  # boot only: its memory back
        n.radar_cfg = why is None
        if why:
            log("ERROR", "radar: not configured: %s" % why)
        else:
            log(
                "INFO",
                "radar: configured: bluetooth off, gates %(move_gate)d/%(still_gate)d, "
                "sensitivity %(move_sens)d/%(still_sens)d, read back" % n.cfg["radar"],
            )
    while True:
        data = uart.read(64)  # None when nothing came: the radar sends ~10 frames/s
        if data:
            n.radar.feed(data, ticks_ms())
            n.sup.beat("radar")
        await asyncio.sleep_ms(20)
