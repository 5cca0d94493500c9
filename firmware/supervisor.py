# Keeps the node's tasks alive: a task that raises is logged and started
# again, never a silent dead node. Tasks that must never stall (the panel:
# buttons and lamps) report in with beat(); one that stops reporting is
# cancelled and started again, and the hardware watchdog is not fed until
# it has kept going for RECOVER_MS. So a task that cannot be revived, or an
# event loop blocked for good, lets the watchdog restart the board; the open
# call survives that (calls.py saves it).
import asyncio
import os

from log import exc, log
from ticks import ticks_diff, ticks_ms

RECOVER_MS = 10000
GOOD_LOOPS = 120  # a minute of the watchdog loop: the boot worked (loader.py's crash count)


class Supervisor:
    def __init__(self, feed, period_ms=500):
        self.feed = feed  # the watchdog's feed function
        self.period_ms = period_ms
        self.restarts = 0
        # name -> [task, function, its argument, silence ms, ticks of the last beat]
        self.tasks = {}
        self._faults = []  # tasks whose next beat() raises (`fault <task>`)
        self._mute = []  # tasks whose beats go unheard (`stall <task>`)
        self.trial = None  # trial.watch() (an OTA update on trial), not supervised
        self._stalled = None  # ticks of the latest stall
        asyncio.get_event_loop().set_exception_handler(self._failed)

    def spawn(self, name, fn, arg, silence_ms=0):
        """Run the coroutine `fn(arg)` for ever; with silence_ms, it must
        beat() at least that often."""
        self.tasks[name] = [asyncio.create_task(fn(arg)), fn, arg, silence_ms, ticks_ms()]

    def beat(self, name):
        if name in self._mute:
            return  # `stall <task>`: it runs on, but as if it hung
        self.tasks[name][4] = ticks_ms()
        if name in self._faults:
            self._faults.remove(name)
            raise RuntimeError("injected fault")  # the unix board's `fault <task>`

    def inject(self, name, stall=False):
        """The task's next beat() raises, or (stall) its beats go unheard
        until it is started again (tests: it must come back either way).
        Only a task watched for silence can stall."""
        t = self.tasks.get(name)
        if t is None or (stall and not t[3]):
            return False
        (self._mute if stall else self._faults).append(name)
        return True

    def _failed(self, loop, context):
        e = context.get("exception")
        for name, entry in self.tasks.items():
            if entry[0] is context.get("future"):
                exc("task %s failed; starting it again" % name, e)
                return
        exc("task failed", e)

    async def watchdog(self):
        loops = 0
        while True:
            if loops < GOOD_LOOPS:
                loops += 1
                if loops == GOOD_LOOPS:
                    try:
                        os.remove("var/crashes")  # no longer crashes in a row
                    except OSError:
                        pass
            now = ticks_ms()
            for name, entry in self.tasks.items():
                task = entry[0]
                if task.done():  # its exception, if any, was logged by _failed
                    log("WARN", "task %s ended; starting it again" % name)
                elif entry[3] and ticks_diff(now, entry[4]) > entry[3]:
                    log("ERROR", "task %s stalled; starting it again" % name)
                    task.cancel()
                    self._stalled = now
                    if name in self._mute:
                        self._mute.remove(name)
                else:
                    continue
                self.restarts += 1
                entry[0] = asyncio.create_task(entry[1](entry[2]))
                entry[4] = now
            # Fed again only once a revived task has kept going a while: one
            # that keeps stalling lets the watchdog restart the board.
            # (Forgotten once recovered: a ticks_diff taken days later wraps
            # on the ESP32 and would stop the feeding for no reason.)
            if self._stalled is not None and ticks_diff(now, self._stalled) > RECOVER_MS:
                self._stalled = None
            if self._stalled is None:
                self.feed()
            await asyncio.sleep_ms(self.period_ms)
