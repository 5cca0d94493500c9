# The node's one clock: every module reads time through ticks_ms(),
# ticks_diff() and ticks_add() from here, never from `time` directly.
#
# On the ESP32 these are MicroPython's own, which wrap at 2**30 ms (~12.4
# days): a difference is only meaningful within +-2**29 ms (~6.2 days), so
# no interval the firmware keeps may be longer (docs/firmware.md, "Ticks").
# The 64-bit unix port wraps at 2**62, which would hide every such fault:
# here the clock is made to run with the ESP32's period, and can start just
# below the wrap (MAMAROOM_TICKS_START=<ms>), so tests cross it in seconds.
#
# MAMAROOM_TICKS_FAST=1 (the unix port only: `make soak`'s accelerated
# week) makes the node's time run as fast as the machine can run the node:
# board/sim.py makes asyncio read this clock too and skip, not sleep,
# its waits for the next timer (adding them to _skip).
import sys

if sys.platform == "esp32":
    from time import ticks_add, ticks_diff, ticks_ms
else:
    import os
    import time

    from micropython import const

    _MASK = const((1 << 30) - 1)  # the ESP32's period, 2**30 (on a 32-bit port)
    _HALF = const(1 << 29)
    _skip = 0  # ms of waiting skipped (MAMAROOM_TICKS_FAST)
    _off = int(os.getenv("MAMAROOM_TICKS_START") or 0) - time.ticks_ms()  # type: ignore[operator]  # (the stubs' ticks type)

    def ticks_ms():
        return (time.ticks_ms() + _skip + _off) & _MASK  # type: ignore[operator]

    def ticks_add(t, delta):
        return (t + delta) & _MASK

    def ticks_diff(a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    if os.getenv("MAMAROOM_TICKS_FAST"):
        from board import sim  # (apart: a node that does not use it has no room for it)

        sim.fast()
