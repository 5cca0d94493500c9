# node.panel on the real interpreter, with the real call state saved by the
# real store.py (var/ on this port's disk) and a stand-in board: the lamp
# and the buzzer go on before the press is saved to flash (a flash erase can
# take hundreds of ms: the lamp must not wait for it).
import asyncio

import store
from calls import Calls
from filters import Delayed
from node import CALL, STATUS, Light, Node, panel
from supervisor import Supervisor


class Done(Exception):
    pass


class Board:
    """The board's interface as node.panel uses it; out() notes whether the
    call was on flash at the moment each output changed."""

    def __init__(self):
        self.latched = [False, False]
        self.reads = 0
        self.log = []  # (output, on, the call on flash then)

    def inputs(self):
        self.reads += 1
        if self.reads > 20:  # 200 ms of panel steps: the press long taken
            raise Done()
        return False, True, False  # the button held down

    def out(self, i, on):
        self.log.append((i, on, store.load("call") is not None))

    def link(self):
        return True, -50


def node(b):
    n = Node()
    n.board = b
    n.device = "n-test-0101"
    n.boot = 1
    n.seq = 0
    n.error = None
    n.mqtt = None
    n.test_until = n.identify_until = None
    n.door = Delayed(200, 200)
    n.button = Delayed(30, 30)
    n.staff = Delayed(30, 30)
    n.calls = Calls(store)
    n.lamp = Light(b.out, 0, CALL)
    n.led = Light(b.out, 2, STATUS)
    n.buzz = None
    n.sup = Supervisor(lambda: None)
    n.sup.tasks["panel"] = [None, None, None, 0, 0]  # beat() needs its entry
    n.wake = asyncio.Event()
    return n


def test_the_lamp_and_the_buzzer_before_the_flash():
    store.remove("call")
    b = Board()
    n = node(b)
    try:
        try:
            asyncio.run(panel(n))
        except Done:
            pass
        lamp = [e for e in b.log if e[0] == 0 and e[1]]
        buzzer = [e for e in b.log if e[0] == 1 and e[1]]
        assert lamp and buzzer, b.log
        assert not lamp[0][2] and not buzzer[0][2], b.log  # lit while nothing was on flash
        assert store.load("call")["status"] == "calling"  # and saved right after
        assert n.wake.is_set()  # the publisher told
    finally:
        store.remove("call")
