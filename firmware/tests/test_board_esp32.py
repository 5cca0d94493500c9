# board/esp32.py on the unix port's interpreter, against stand-ins for the
# ESP32's machine, network and esp32 modules: what it does with them (the
# Wi-Fi task, the heap figures, the interrupt latches, the reset causes),
# not whether the chip does what the stand-ins do (docs/firmware.md, "What
# cannot be verified without a board").
import asyncio
import sys

from ticks import ticks_diff, ticks_ms


class Pin:
    IN, OUT, PULL_UP, IRQ_FALLING = 1, 3, 1, 2

    def __init__(self, n, mode=None, pull=None, value=1):
        self.n = n
        self.v = value
        self.handler = None

    def irq(self, handler=None, trigger=None):
        self.handler = handler

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class UART:
    def __init__(self, *args, **kwargs):
        pass


class WDT:
    def __init__(self, timeout=0):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Machine:  # the `machine` module, as far as board/esp32.py uses it
    Pin = Pin
    UART = UART
    WDT = WDT
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    cause = 1

    @staticmethod
    def reset_cause():
        return Machine.cause

    @staticmethod
    def reset():
        raise SystemExit(75)


class WLAN:
    up = True  # the access point's side: the driver joined (or rejoined by itself)
    joins = 0  # connect() calls

    def __init__(self, interface):
        pass

    def active(self, on=None):
        return True

    def isconnected(self):
        return WLAN.up

    def connect(self, ssid, password):
        WLAN.joins += 1

    def disconnect(self):
        pass

    def status(self, what=None):
        return -60 if what == "rssi" else 201  # (201: no access point found)

    def ifconfig(self):
        return ("10.0.0.9", "255.255.255.0", "10.0.0.1", "10.0.0.1")


class Network:
    STA_IF = 0
    WLAN = WLAN

    @staticmethod
    def hostname(name):
        pass


class Esp32:
    HEAP_DATA = 4
    heaps = ((150000, 90000, 60000, 50000), (30000, 12000, 11000, 9000))

    @staticmethod
    def idf_heap_info(capabilities):
        return list(Esp32.heaps)


class Calls:
    def __init__(self):
        self.open = False

    def active(self):
        return self.open


class Mqtt:
    kick = False


class Node:
    def __init__(self):
        self.calls = Calls()
        self.mqtt = Mqtt()


def board():
    """(board/esp32.py as a module, one Board of it, a node for it)."""
    sys.modules["machine"] = Machine
    sys.modules["network"] = Network
    sys.modules["esp32"] = Esp32
    from board import esp32 as m

    WLAN.up = True
    WLAN.joins = 0
    cfg = {
        "pins": {
            "door": 27,
            "button": 14,
            "button_lamp": 25,
            "staff": 13,
            "corridor_lamp": 26,
            "buzzer": 33,
            "status_led": 2,
            "radar_rx": 16,
            "radar_tx": 17,
            "radar_out": 34,
        },
        "wifi": {"ssid": "park", "password": "secret"},
        "device": "n-test-0101",
    }
    b = m.Board(cfg)
    n = Node()
    b.tasks(n)
    return m, b, n


async def stop(t):
    """Cancelled, and gone before the test ends (the unix port's event loop
    outlives asyncio.run: a task left in it would run on in the next test)."""
    t.cancel()
    await asyncio.sleep_ms(0)


async def until(check, ms=5000):
    """Polled every 5 ms until true; False if it never was within `ms`."""
    t0 = ticks_ms()
    while not check():
        if ticks_diff(ticks_ms(), t0) > ms:
            return False
        await asyncio.sleep_ms(5)
    return True


def test_the_link_back_by_itself_tells_mqtt_at_once():
    m, b, n = board()
    m.POLL_MS, m.JOIN_MS, m.WIFI_BASE_MS = 10, 30, 20

    async def go():
        t = asyncio.create_task(b.wifi())
        assert await until(lambda: n.mqtt.kick)  # up at boot: the broker at once
        n.mqtt.kick = False
        WLAN.up = False  # the access point gone
        assert await until(lambda: WLAN.joins >= 2)  # tried, and again after a backoff
        assert not n.mqtt.kick
        WLAN.up = True  # the driver rejoined by itself, between two of our tries
        assert await until(lambda: n.mqtt.kick)
        await stop(t)

    asyncio.run(go())


def test_a_call_open_keeps_the_wifi_retries_within_urgent_ms():
    m, b, n = board()
    m.POLL_MS, m.JOIN_MS, m.WIFI_BASE_MS, m.URGENT_MS = 10, 20, 400, 100
    waits = []
    log = m.log
    m.log = lambda level, text: waits.append(int(text.split()[-2])) if "again in" in text else None

    async def go():
        WLAN.up = False
        t = asyncio.create_task(b.wifi())
        assert await until(lambda: len(waits) >= 2)
        n.calls.open = True  # a press: from now on every wait is capped
        k = len(waits)
        assert await until(lambda: len(waits) >= k + 3)
        await stop(t)
        return k

    try:
        k = asyncio.run(go())
    finally:
        m.log = log
    assert min(waits[1:k]) > m.URGENT_MS, waits  # (the backoff had grown past the cap)
    assert max(waits[k + 1 :]) <= m.URGENT_MS, waits


def test_a_call_opened_cuts_a_long_wifi_wait_short():
    m, b, n = board()
    # A wait of 30 to 60 s after the first failure, unless a call is open.
    m.POLL_MS, m.JOIN_MS, m.WIFI_BASE_MS, m.WIFI_CAP_MS = 10, 20, 30000, 60000

    async def go():
        WLAN.up = False
        t = asyncio.create_task(b.wifi())
        assert await until(lambda: WLAN.joins == 1)
        await asyncio.sleep_ms(50)  # (into the long wait)
        n.calls.open = True
        assert await until(lambda: WLAN.joins == 2, ms=10000)  # far less than 30 s
        await stop(t)

    asyncio.run(go())


def test_heap_figures_count_what_the_heap_can_grow_into():
    m, b, _ = board()
    free, grow, idf = b.heap()
    assert free > 0 and idf == 90000 + 12000
    assert grow == 60000 - m.IDF_KEEP  # the largest IDF block, less Wi-Fi's and TLS's share
    saved = Esp32.heaps
    Esp32.heaps = ((150000, 20000, 9000, 5000),)
    try:
        assert b.heap()[1:] == (0, 20000)  # too little to grow into
    finally:
        Esp32.heaps = saved


def test_edges_are_latched_by_the_interrupts():
    b = board()[1]
    assert b.latched == [False, False]
    b._button.handler(b._button)  # pressed and released while the loop was busy
    assert b.latched == [True, False]
    b._staff.handler(b._staff)
    assert b.latched == [True, True]
    assert b.inputs() == (False, False, False)  # (levels: all released, pull-ups high)


def test_reset_causes_in_telemetrys_words():
    for cause, word in ((1, "power_on"), (2, "hard"), (3, "watchdog"), (99, "unknown")):
        Machine.cause = cause
        assert board()[1].reset_cause == word
    Machine.cause = 1
