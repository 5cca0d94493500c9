# The real board: ESP32-DevKitC-32E wired as hardware/pins.md says. The only
# module that touches hardware (machine, network); the node's logic sees
# the same small interface as on the unix port (board/unix.py):
#   inputs() -> (door locked, button pressed, staff key pressed)
#   out(i, on)   0 the call lamp (corridor lamp and the button's ring), 1 the buzzer, 2 the LED
#   uart         the LD2410's UART2 (read(n) -> bytes or None)
#   feed()       the hardware watchdog   link() -> (Wi-Fi up, RSSI dBm)
#   heap() -> (free in the Python heap, more it can grow by, IDF heap free)
#   tasks(node)  its own tasks (Wi-Fi kept up)   reset_cause, reset()
# Cannot run on a board here: it is type-checked against
# micropython-esp32-stubs (tests/firmware/test_types.py) and run on the unix
# port against stand-ins for machine, network and esp32
# (firmware/tests/test_board_esp32.py); docs/firmware.md lists what a board
# must still prove.
import asyncio
import gc
import random

import esp32
import machine
import network
from log import exc, log
from ticks import ticks_diff, ticks_ms

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

WDT_MS = 8000  # the supervisor feeds every 0.5 s while the node is healthy
RADAR_BAUD = 256000  # HLK-LD2410 default, 8N1
WIFI_BASE_MS = 1000  # reconnect backoff: doubling from this, as for the broker,
WIFI_CAP_MS = 30000  # up to this,
URGENT_MS = 3000  # and no longer than this while a call is open (mqtt.URGENT_MS too)
JOIN_MS = 15000  # an attempt to join the access point, at most
POLL_MS = 250  # the link looked at: MQTT is told within this that it is back
# The IDF heap the Python heap never counts as room to grow into: Wi-Fi's
# buffers, lwIP and a TLS handshake take theirs from it (an estimate, to be
# measured on a board: docs/firmware.md, "Reset causes and heap figures").
IDF_KEEP = 24576
# machine.reset_cause() in the words of telemetry's reset_reason. The ESP32
# folds causes together: a brownout reports PWRON_RESET (power_on), a
# panic HARD_RESET (hard) (docs/firmware.md, reset causes).
CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}


def reset():
    machine.reset()


class Board:
    name = "esp32"

    def __init__(self, cfg):
        p = cfg["pins"]
        pull = machine.Pin.PULL_UP  # and 2.2 kΩ outside: contacts to 0 V, LOW = closed
        self._door = machine.Pin(p["door"], machine.Pin.IN, pull)
        self._button = machine.Pin(p["button"], machine.Pin.IN, pull)
        self._staff = machine.Pin(p["staff"], machine.Pin.IN, pull)
        # GPIO34 has no internal pull (100 kΩ to 0 V on the carrier): informational only.
        self.radar_out = machine.Pin(p["radar_out"], machine.Pin.IN)
        # Press edges latched by interrupts: a press while the loop is blocked
        # (TLS, a flash erase) is seen afterwards; node.panel debounces it.
        self.latched = [False, False]  # button, staff key
        self._button.irq(handler=self._edge_button, trigger=machine.Pin.IRQ_FALLING)
        self._staff.irq(handler=self._edge_staff, trigger=machine.Pin.IRQ_FALLING)
        out = machine.Pin.OUT
        # Outputs start low (off): the gate pull-downs hold them so through reset too.
        self._lamps = (
            machine.Pin(p["corridor_lamp"], out, value=0),
            machine.Pin(p["button_lamp"], out, value=0),
        )
        self._buzzer = machine.Pin(p["buzzer"], out, value=0)
        self._led = machine.Pin(p["status_led"], out, value=0)
        self.uart = machine.UART(
            2,
            baudrate=RADAR_BAUD,
            bits=8,
            parity=None,
            stop=1,
            tx=p["radar_tx"],
            rx=p["radar_rx"],
            rxbuf=512,
            timeout=0,
        )
        self.reset_cause = CAUSES.get(machine.reset_cause(), "unknown")
        w = cfg.get("wifi") or {}
        self._ssid = w.get("ssid", "")
        self._password = w.get("password", "")
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        try:
            network.hostname(cfg.get("device") or "mamaroom-node")
        except (AttributeError, OSError, ValueError):
            pass  # an older firmware without network.hostname(): the default name
        # Armed last: from here on the supervisor must feed it (a hung loop resets).
        self.wdt = machine.WDT(timeout=WDT_MS)
        self.node: Any = None  # the node, once tasks() is called

    def _edge_button(self, pin):
        self.latched[0] = True

    def _edge_staff(self, pin):
        self.latched[1] = True

    def inputs(self):
        # Active low, as wired (pull-ups, contacts to 0 V).
        return not self._door.value(), not self._button.value(), not self._staff.value()

    def out(self, i, on):
        v = 1 if on else 0
        if i == 0:
            for pin in self._lamps:
                pin.value(v)
        elif i == 1:
            self._buzzer.value(v)
        else:
            self._led.value(v)

    def feed(self):
        self.wdt.feed()

    def link(self):
        up = self.wlan.isconnected()
        rssi = None
        if up:
            try:
                rssi = self.wlan.status("rssi")
            except (OSError, ValueError):
                pass
        return up, rssi

    def heap(self):
        """From MicroPython 1.22 the ESP32's Python heap starts at 56 KB and
        takes another area from the IDF heap when it runs short (at most the
        IDF's largest free block, gc_try_add_heap): gc.mem_free() is only
        the free room in the areas it has so far. So: (that, what it can
        still grow by, keeping IDF_KEEP for Wi-Fi and TLS, the IDF data
        heap's free bytes in all)."""
        idf = block = 0
        for h in esp32.idf_heap_info(esp32.HEAP_DATA):  # (total, free, largest block, least)
            idf += h[1]
            block = max(block, h[2])
        return gc.mem_free(), max(0, block - IDF_KEEP), idf

    def tasks(self, node):
        self.node = node
        return [("wifi", Board.wifi)]

    def _urgent(self):
        n = self.node
        return n is not None and n.calls.active()

    async def wifi(self):
        """Keeps Wi-Fi up: connect, and again with backoff and jitter after a
        drop (at most URGENT_MS apart while a call is open). Whenever the
        link comes back, the driver's own reconnect included (MicroPython's
        ESP32 WLAN rejoins by itself after a drop), the MQTT client is told
        within POLL_MS: it connects at once, its backoff afresh, instead of
        sleeping out up to 30 s of it."""
        failures = 0
        was = False
        while True:
            if self.wlan.isconnected():
                if not was:
                    was = True
                    log("INFO", "wifi: up, %s" % (self.wlan.ifconfig()[0],))
                    m = self.node.mqtt if self.node else None
                    if m:
                        m.kick = True  # the broker at once, its backoff afresh
                failures = 0
                await asyncio.sleep_ms(POLL_MS)
                continue
            if was:
                was = False
                log("WARN", "wifi: link lost")
            if not self._ssid:
                log("ERROR", "wifi: no ssid in config.json")
                await asyncio.sleep_ms(60000)
                continue
            log("INFO", "wifi: connecting to %s" % self._ssid)
            try:
                self.wlan.disconnect()
            except OSError:
                pass
            try:
                self.wlan.connect(self._ssid, self._password)
            except OSError as e:
                exc("wifi", e)
            t0 = ticks_ms()
            while not self.wlan.isconnected() and ticks_diff(ticks_ms(), t0) < JOIN_MS:
                await asyncio.sleep_ms(POLL_MS)
            if self.wlan.isconnected():
                continue  # (the top of the loop says so and tells MQTT)
            failures += 1
            delay = min(WIFI_CAP_MS, WIFI_BASE_MS << min(failures, 5))
            delay = delay // 2 + random.getrandbits(16) % (delay // 2 + 1)
            if self._urgent():
                delay = min(delay, URGENT_MS)  # a call open: try again within seconds
            log("WARN", "wifi: no link (status %s); again in %d ms" % (self.wlan.status(), delay))
            # Waited in steps: a call opened meanwhile cuts it short, and the
            # link coming back by itself ends it.
            t0 = ticks_ms()
            while not self.wlan.isconnected() and ticks_diff(ticks_ms(), t0) < (
                min(delay, URGENT_MS) if self._urgent() else delay
            ):
                await asyncio.sleep_ms(POLL_MS)
