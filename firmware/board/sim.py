# The unix port's helpers that a running node does not keep (its heap is
# small), loaded when needed; never used on a board. (One module, not one
# each: the OTA bundle's manifest must fit the node's 512-byte buffer.)
#
# write(): the unix board's LD2410, answering the commands radarcfg.py sends
# at boot as Hi-Link's serial protocol says: each command frame with its
# ACK frame (the command | 0x100, status 0, what the command returns), and
# only in config mode. Its settings live on the board (Board.bt, gates,
# move, still: `radar?` shows them); this module is forgotten when the
# radar leaves config mode. For tests it can be made to misbehave:
# MAMAROOM_SIM_RADAR=refuse:<cmd> answers that command (hex, e.g. a4) with
# status 1 (failed), ignore:<cmd> acknowledges it and keeps its old settings.
#
# fast(): MAMAROOM_TICKS_FAST (ticks.py), the node's time as fast as the
# machine runs the node. asyncio's clock becomes ticks.py's (the port's own
# ticks plus the waits skipped), and when the event loop has nothing to run
# until its next timer, the sockets are looked at and the wait is skipped:
# the clock moves on by it at once. Every task still takes every step it
# would on a board, in the same order; only the idle time between steps is
# gone. Work takes real time on this clock, so a slow machine makes a slow
# week, never a stalled task (docs/firmware.md, "Ticks").
import os
import sys
import time
from asyncio import core  # type: ignore[attr-defined]  # MicroPython's own

import ticks


def write(b, data):
    """`data` written to board `b`'s radar UART; the answers queued for it to read."""
    w = (os.getenv("MAMAROOM_SIM_RADAR") or ":").split(":")
    odd = int(w[1], 16) if w[1] else -1
    b.cmd += data
    while True:
        buf = b.cmd
        i = buf.find(b"\xfd\xfc\xfb\xfa")
        if i < 0 or len(buf) < i + 8:
            break
        n = buf[i + 4] | buf[i + 5] << 8
        if len(buf) < i + 10 + n:
            break
        cmd = buf[i + 6] | buf[i + 7] << 8
        v = buf[i + 8 : i + 6 + n]
        b.cmd = buf[i + 10 + n :]
        out = b""
        status = 0
        if not b.cfg_mode and cmd != 0xFF:
            continue  # outside config mode a command is not answered
        if cmd == odd:
            status = 1 if w[0] == "refuse" else 0  # ignore: "done" (it is not)
            cmd = -cmd  # applied neither way
        if cmd == 0xFF:
            b.cfg_mode = True
            out = b"\x01\x00\x40\x00"  # protocol version 1, buffer 64
        elif cmd == 0xA4:
            b.bt = v[0] == 1
        elif cmd == 0x60:  # three parameters: word (2 bytes), value (4)
            for k in range(0, 18, 6):
                b.gates[v[k]] = v[k + 2] | v[k + 3] << 8
        elif cmd == 0x61:  # the parameters: 0xAA, farthest gate, both gates set,
            # the moving and the still sensitivity of each gate, the idle time
            g = b.gates
            out = bytes((0xAA, 8, g[0], g[1])) + b.move + b.still + bytes((g[2] & 0xFF, g[2] >> 8))
        elif cmd == 0x64:  # gate (0xFFFF: all), moving, still (gates 0 and 1: not settable)
            g = v[2] | v[3] << 8
            for k in range(9) if g == 0xFFFF else (g,):
                b.move[k] = v[8]
                if k > 1:
                    b.still[k] = v[14]
        elif cmd in (0xA3, 0xFE):  # restart, end of config mode: data again
            b.cfg_mode = False
        cmd = abs(cmd)
        n = 4 + len(out)
        b.rx += (
            bytes((0xFD, 0xFC, 0xFB, 0xFA, n, 0, cmd & 0xFF, cmd >> 8 | 1, status, 0))
            + out
            + b"\x04\x03\x02\x01"
        )
    if not b.cfg_mode:  # set up: forgotten until the next command
        sys.modules.pop("board.sim", None)
        import board

        try:
            del board.sim
        except (AttributeError, KeyError):
            pass
        globals().pop("write", None)  # (fast()'s functions keep this module's globals)
    return len(data)


def fast():
    wait = core._io_queue.wait_io_event

    def now():  # in the port's own period: asyncio's task queue compares in it
        return time.ticks_ms() + ticks._skip  # type: ignore[operator]

    def fast(dt):
        if dt > 0:  # nothing to run for dt ms: sockets looked at, the wait skipped
            wait(0)
            ticks._skip += dt
        else:
            wait(dt)

    core.ticks = now
    core._io_queue.wait_io_event = fast
