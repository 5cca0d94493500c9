# The LD2410 set up at boot over its UART, in Hi-Link's serial protocol
# (command frames FD FC FB FA ... 04 03 02 01, each answered by an ACK
# frame: the command | 0x0100, then a status word, 0 for success):
# config mode; Bluetooth OFF (the LD2410B and C ship with it on, and anyone
# nearby with Hi-Link's phone app could then read presence in a nursing
# room); the farthest moving and still gates and the sensitivities (all
# gates) from config.json's `radar`; then a restart, which is when the
# Bluetooth setting takes effect. Every command must be acknowledged, else
# the setup says which one failed (the node logs it and reports
# `radar_config: false` in telemetry; the radar's data is used either way).
# Boot only: node.radar imports it once and forgets it.
import asyncio

from ticks import ticks_diff, ticks_ms

HEAD = b"\xfd\xfc\xfb\xfa"
TAIL = b"\x04\x03\x02\x01"
IDLE_S = 5  # the radar's own "nobody" delay (the node filters after it)


def frame(cmd, value=b""):
    n = 2 + len(value)
    return HEAD + bytes((n & 0xFF, n >> 8, cmd & 0xFF, cmd >> 8)) + value + TAIL


def _word(word, value):
    """A parameter: its word, then its value in 4 bytes (little-endian)."""
    return bytes((word & 0xFF, word >> 8, value & 0xFF, value >> 8 & 0xFF,
                  value >> 16 & 0xFF, value >> 24 & 0xFF))


async def _ack(uart, cmd, ms=1000):
    """Status 0 in the ACK of `cmd` within `ms`? (Data frames in between
    have another header and are skipped.)"""
    buf = b""
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < ms:
        d = uart.read(64)
        if d:
            buf += d
        i = buf.find(HEAD)
        while 0 <= i and len(buf) >= i + 10:
            n = buf[i + 4] | buf[i + 5] << 8
            if len(buf) < i + 10 + n:
                break
            if buf[i + 6] | buf[i + 7] << 8 == cmd | 0x100:
                return buf[i + 8] | buf[i + 9] << 8 == 0
            buf = buf[i + 10 + n:]
            i = buf.find(HEAD)
        await asyncio.sleep_ms(20)
    return False


async def setup(uart, r):
    """None when every step was acknowledged, else the step that was not."""
    for cmd, value, what in (
            (0x00FF, b"\x01\x00", "config mode"),
            (0x00A4, b"\x00\x00", "bluetooth off"),
            (0x0060, _word(0, r["move_gate"]) + _word(1, r["still_gate"]) + _word(2, IDLE_S),
             "gates"),
            (0x0064, _word(0, 0xFFFF) + _word(1, r["move_sens"]) + _word(2, r["still_sens"]),
             "sensitivities"),
            (0x00A3, b"", "restart")):
        for _ in range(3):
            uart.write(frame(cmd, value))
            if await _ack(uart, cmd):
                break
        else:
            return what
    return None
