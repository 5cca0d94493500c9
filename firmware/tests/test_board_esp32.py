# board/esp32.py on the unix port's interpreter, against stand-ins for the
# ESP32's machine, network and esp32 modules: what it does with them (the
# heap figures, the interrupt latches, the reset causes),
# not whether the chip does what the stand-ins do (docs/firmware.md, "What
# cannot be verified without a board").
import sys


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
    cfg = {"pins": {"door": 27, "button": 14, "button_lamp": 25, "staff": 13,
                    "corridor_lamp": 26, "buzzer": 33, "status_led": 2, "radar_rx": 16,
                    "radar_tx": 17, "radar_out": 34},
           "wifi": {"ssid": "park", "password": "secret"}, "device": "n-test-0101"}
    b = m.Board(cfg)
    n = Node()
    b.tasks(n)
    return m, b, n


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
