# supervisor.py on the real interpreter, its clock (ticks.py, the ESP32's
# 2**30 ms period on this port too) moved on by hand: a task that stalls is
# started again, the watchdog is not fed until it has kept going RECOVER_MS,
# and then it is fed on for a week, across the tick wrap. (A stall kept in
# mind for good would make ticks_diff wrap 6.2 days later and stop the
# feeding: the board would reset for nothing.)
import asyncio

import ticks
from supervisor import RECOVER_MS, Supervisor

DAY_MS = 86400000


def test_a_stall_long_ago_never_stops_the_watchdog():
    feeds = [0]

    def feed():
        feeds[0] += 1

    sup = Supervisor(feed, period_ms=1)

    async def steady(arg):
        while True:
            sup.beat("t")
            await asyncio.sleep_ms(1)

    async def fed(loops=500):
        """Fed again within `loops` of the watchdog's (1 ms) steps?"""
        f = feeds[0]
        for _ in range(loops):
            await asyncio.sleep_ms(1)
            if feeds[0] > f:
                return True
        return False

    async def main():
        ticks._off += (1 << 30) - 3 * DAY_MS - ticks.ticks_ms()  # 3 days below the wrap
        sup.spawn("t", steady, None, 2000)
        w = asyncio.create_task(sup.watchdog())
        try:
            assert await fed()
            assert sup.inject("t", stall=True)  # its beats go unheard, as if it hung
            ticks._off += 3000  # 3 s of silence
            for _ in range(500):
                await asyncio.sleep_ms(1)
                if sup.restarts:
                    break
            assert sup.restarts == 1
            assert not await fed(50)  # not fed right after the stall
            ticks._off += RECOVER_MS + 1000
            sup.beat("t")  # (at once: the jump is not a silence of its own)
            assert await fed(), "not fed once recovered"
            wrapped = False
            for day in range(8):  # a week and a day, a day at a time
                before = ticks.ticks_ms()
                ticks._off += DAY_MS
                sup.beat("t")
                wrapped = wrapped or ticks.ticks_ms() < before
                assert await fed(), "not fed %d days after the stall" % (day + 1)
            assert wrapped and sup.restarts == 1
        finally:
            w.cancel()
            sup.tasks["t"][0].cancel()

    off = ticks._off
    try:
        asyncio.run(main())
    finally:
        ticks._off = off
