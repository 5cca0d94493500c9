# The node on the MicroPython unix port: the same logic as on the ESP32,
# with the room's switches, lamps and radar simulated and driven over a
# line-based TCP control port on 127.0.0.1:<sim_port> (docs/firmware.md):
#
#   press | release | staff | door locked | door unlocked
#   radar <none|moving|still|both> <cm>
#   lamp? -> lamp <off|fast|slow|steady>     buzzer? -> buzzer <on|off>
#   led? -> led <config|wifi|broker|online|identify|safe> (the status LED's pattern)
#   heap? -> heap <alloc> <free> <largest free block> (after a collection)
#   fault <task> -> the task raises once (the supervisor must start it again)
#   stall <task> -> the task's reports go unheard, as if it hung (the same)
#   block <ms> [press|staff] -> the loop blocked <ms>, that key pressed meanwhile
#   link up|down -> the simulated Wi-Fi (up again: MQTT retries at once)
#   radar? -> radar bluetooth <on|off> gates <move> <still> sens <move> <still>
#   ticks? -> ticks <ms> (the node's clock, ticks.py)   feeds? -> feeds <n> (watchdog feeds)
#   uptime? -> uptime <s> (the node's uptime_s)
#
# Every command is answered with one line ("ok" or "error: ..."). The
# simulated LD2410 sends a real data frame every 100 ms for the target it was
# told about, cut at random points (now and then after some line noise),
# into the UART that node.radar reads, as on the board, and answers the
# LD2410's commands with ACK frames as the real one does (board/sim.py).
import asyncio
import gc
import random
import socket
import sys
import time

from ld2410 import encode
from ticks import ticks_diff, ticks_ms

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

HOLD_MS = 120  # a finger on a button: longer than the debounce
HOLD_READS = 8  # the panel reads the inputs every 10 ms
ENERGY = {"none": (0, 0), "moving": (70, 0), "still": (0, 55), "both": (60, 50)}


def reset():
    """The unix port's reset: the process ends with 75; what runs it (the
    tests, a shell loop) starts it again, as the chip would restart."""
    print("board: reset")
    sys.exit(75)


class Board:
    name = "unix"
    reset_cause = "power_on"

    def __init__(self, cfg):
        self.port = cfg.get("sim_port") or 0
        self.uart = self  # the radar's UART: read() below
        self.node: Any = None  # the node, once tasks() is called
        self.door = False
        # The button and the staff key: [level, ticks it was set, levels to come,
        # times it was read]. Each level is held HOLD_MS at least, as a finger
        # would (two presses sent back to back are still two presses), and is
        # read HOLD_READS times at least: a process the OS left waiting for a
        # while must still see every press.
        t = ticks_ms()
        self.keys: tuple = ([False, t, [], 0], [False, t, [], 0])
        self.target = ("none", 0)
        self.rx = b""
        self.outs = [False, False, False]  # call lamp, buzzer, status LED
        self.feeds = 0
        self.up = True  # the simulated Wi-Fi link (`link up|down`)
        # The simulated LD2410's settings, as its commands set them (write()),
        # from its factory defaults: Bluetooth on (as the B and C ship), gates
        # 8 and 8, the sensitivities per gate 0-8 (still: not settable for
        # gates 0 and 1), 5 s "nobody" delay.
        self.bt = True
        self.gates = [8, 8, 5]  # farthest moving gate, farthest still gate, idle s
        self.move = bytearray((50, 50, 40, 30, 20, 15, 15, 15, 15))
        self.still = bytearray((0, 0, 40, 40, 30, 30, 20, 20, 20))
        self.cfg_mode = False
        self.cmd = b""
        self.latched = [False, False]  # edges an interrupt saw: button, staff key (`block`)

    def inputs(self):
        """(door locked, button pressed, staff key pressed)."""
        now = ticks_ms()
        for k in self.keys:
            k[3] += 1
            d = ticks_diff(now, k[1])
            if k[2] and (d >= HOLD_MS or d < 0) and k[3] > HOLD_READS:  # (< 0: days ago)
                k[0] = k[2].pop(0)
                k[1] = now
                k[3] = 0
        return self.door, self.keys[0][0], self.keys[1][0]

    def _key(self, i, *levels):
        q = self.keys[i][2]
        if len(q) < 16:
            q.extend(levels)

    def out(self, i, on):
        self.outs[i] = on  # 0 the call lamp (corridor lamp and ring), 1 the buzzer, 2 the LED

    def feed(self):
        self.feeds += 1  # no hardware watchdog on the unix port: counted

    def link(self):
        return self.up, -55 if self.up else None  # (Wi-Fi up, RSSI dBm)

    def heap(self):
        """(free in the heap, more it can still grow by, the IDF heap's free):
        the unix port's heap is one fixed area, and it has no IDF."""
        return gc.mem_free(), 0, None

    def tasks(self, node):
        """The board's own tasks: (name, coroutine function of the board)."""
        self.node = node
        return [("sim", Board.sim)]

    def read(self, n):
        """The radar's UART: what has come, or None."""
        out = self.rx[:n]
        self.rx = self.rx[n:]
        return out or None

    def write(self, data):
        """The radar's UART, written: the simulated LD2410 answers its
        commands (board/sim.py, loaded while the radar is set up)."""
        from board import sim

        return sim.write(self, data)

    async def sim(self):
        """The radar and the control port (one connection at a time), every 10 ms."""
        srv = conn = None
        if self.port:
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(socket.getaddrinfo("127.0.0.1", self.port)[0][-1])
            srv.listen(4)
            srv.setblocking(False)
        got = frame = b""
        sent = ticks_ms()
        try:
            while True:
                await asyncio.sleep_ms(10)
                now = ticks_ms()
                if not frame and not self.cfg_mode and ticks_diff(now, sent) >= 100:
                    sent = now
                    state, cm = self.target
                    move, still = ENERGY[state]
                    frame = encode(state, cm if move else 0, move, cm if still else 0, still, cm)
                    if random.getrandbits(4) == 0:  # line noise before it
                        frame = bytes((random.getrandbits(8), 0xF4, 0xF3)) + frame
                if frame:
                    cut = 1 + random.getrandbits(5) % len(frame)
                    self.rx = self.rx[-256:] + frame[:cut]  # overrun if nobody reads
                    frame = frame[cut:]
                if srv is None:
                    continue
                try:
                    if conn is None:
                        conn = srv.accept()[0]
                        conn.setblocking(False)
                        got = b""
                    data = conn.recv(128)
                except OSError:
                    continue
                if data == b"":
                    conn.close()
                    conn = None
                    continue
                got += data
                while b"\n" in got:
                    line, got = got.split(b"\n", 1)
                    conn.setblocking(True)
                    conn.send(self.command(line.decode().strip()).encode() + b"\n")
                    conn.setblocking(False)
        finally:
            if conn:
                conn.close()
            if srv:
                srv.close()

    def command(self, line):
        w = line.split()
        w += ("", "")  # w[1], w[2] exist
        if line == "press":
            self._key(0, True)  # held until `release`
        elif line == "release":
            self._key(0, False)
        elif line == "staff":
            self._key(1, True, False)
        elif w[0] == "door" and w[1] in ("locked", "unlocked"):
            self.door = w[1] == "locked"
        elif w[0] == "radar" and w[1] in ENERGY and w[2].isdigit():
            self.target = (w[1], min(int(w[2]), 600))
        elif line == "lamp?":  # (no node: safe.py, lamp on or off)
            return "lamp " + (
                self.node.lamp.name if self.node else "steady" if self.outs[0] else "off"
            )
        elif line == "buzzer?":
            return "buzzer " + ("on" if self.outs[1] else "off")
        elif line == "led?":
            return "led " + (str(self.node.led.name) if self.node else "safe")
        elif line == "heap?":
            gc.collect()
            a, f = gc.mem_alloc(), gc.mem_free()
            lo, hi = 0, f  # the largest block free: what a big message needs
            while hi - lo > 32:
                mid = (lo + hi) // 2
                try:
                    bytearray(mid)
                    lo = mid
                except MemoryError:
                    hi = mid
            return "heap %d %d %d" % (a, f, lo)
        elif w[0] == "block" and w[1].isdigit():
            # The whole event loop blocked for <ms> (a TLS handshake, a flash
            # erase); with `press` or `staff`, that key pressed and released
            # meanwhile: its level is back to released when the loop runs
            # again, and only the interrupt saw it (board/esp32.py: Pin.irq).
            ms = int(w[1])
            time.sleep_ms(ms // 2)
            if w[2] in ("press", "staff"):
                self.latched[w[2] == "staff"] = True
            time.sleep_ms(ms - ms // 2)
        elif w[0] == "link" and w[1] in ("up", "down"):
            up = w[1] == "up"
            m = self.node.mqtt if self.node else None
            if up and not self.up and m:
                m.kick = True  # as board/esp32.py's wifi task: retry now
            self.up = up
        elif line == "radar?":  # (sensitivities: gate 8's, as every gate from 2 on)
            g = self.gates
            return "radar bluetooth %s gates %d %d sens %d %d" % (
                "on" if self.bt else "off",
                g[0],
                g[1],
                self.move[8],
                self.still[8],
            )
        elif line == "ticks?":
            return "ticks %d" % ticks_ms()
        elif line == "feeds?":
            return "feeds %d" % self.feeds
        elif line == "uptime?":
            return "uptime %d" % (self.node.uptime_s if self.node else 0)
        elif w[0] in ("fault", "stall"):
            if self.node and self.node.sup.inject(w[1], w[0] == "stall"):
                return "ok"
            return "error: no task %s that can %s" % (w[1], w[0])
        else:
            return "error: unknown command " + line
        return "ok"
