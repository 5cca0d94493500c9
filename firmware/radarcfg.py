# The LD2410 set up at boot over its UART, in Hi-Link's serial protocol
# (command frames FD FC FB FA ... 04 03 02 01, each answered by an ACK
# frame: the command | 0x0100, a status word, 0 for success, then what the
# command returns): config mode; Bluetooth OFF (the LD2410B and C ship with
# it on, and anyone nearby with Hi-Link's phone app could then read presence
# in a nursing room); the farthest moving and still gates and the
# sensitivities (all gates) from config.json's `radar`; the parameters read
# back (command 0x61) and compared with what was sent; then a restart, which
# is when the Bluetooth setting takes effect and the radar sends data again.
# Every command must be acknowledged with status 0, else the setup says
# which one failed and how (the node logs it and reports `radar_config:
# false` in telemetry; the radar's data is used either way). The restart is
# sent whatever failed before it: a radar left in config mode sends no data.
# Boot only: node.radar imports it once and forgets it.
import asyncio

from ticks import ticks_diff, ticks_ms

HEAD = b"\xfd\xfc\xfb\xfa"
TAIL = b"\x04\x03\x02\x01"
IDLE_S = 5  # the radar's own "nobody" delay (the node filters after it)
RESTART = 0x00A3


def frame(cmd, value=b""):
    n = 2 + len(value)
    return HEAD + bytes((n & 0xFF, n >> 8, cmd & 0xFF, cmd >> 8)) + value + TAIL


def _word(word, value):
    """A parameter: its word, then its value in 4 bytes (little-endian)."""
    return bytes(
        (
            word & 0xFF,
            word >> 8,
            value & 0xFF,
            value >> 8 & 0xFF,
            value >> 16 & 0xFF,
            value >> 24 & 0xFF,
        )
    )


async def _ack(uart, cmd, ms=1000):
    """The ACK of `cmd` within `ms`: what follows its command word (the
    status, then the return value), or None. (Data frames in between have
    another header and are skipped.)"""
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
                return buf[i + 8 : i + 6 + n]
            buf = buf[i + 10 + n :]
            i = buf.find(HEAD)
        await asyncio.sleep_ms(20)
    return None


def check(got, r):
    """What the parameters read back (0x61's return value, status first)
    say against config.json's `radar`: None when they agree. Gates 0 and 1
    have no settable still sensitivity (Hi-Link's protocol): not compared."""
    if len(got) < 6 or got[2] != 0xAA:
        return "not a parameter answer"
    n = got[3]  # the radar's farthest gate (8)
    if len(got) < 8 + 2 * (n + 1):
        return "a short parameter answer"
    k = 8 + 2 * n
    for name, i, want in (
        [("move_gate", 4, r["move_gate"]), ("still_gate", 5, r["still_gate"])]
        + [("move_sens", 6 + g, r["move_sens"]) for g in range(n + 1)]
        + [("still_sens", 7 + n + g, r["still_sens"]) for g in range(2, n + 1)]
    ):
        if got[i] != want:
            g = "" if i < 6 else " at gate %d" % ((i - 6) % (n + 1))
            return "%s %d%s, config.json says %d" % (name, got[i], g, want)
    if got[k] | got[k + 1] << 8 != IDLE_S:
        return "idle %d s, not %d" % (got[k] | got[k + 1] << 8, IDLE_S)
    return None


async def setup(uart, r):
    """None when every step was acknowledged and the parameters read back
    are config.json's, else what went wrong."""
    why = None
    for cmd, value, what in (
        (0x00FF, b"\x01\x00", "config mode"),
        (0x00A4, b"\x00\x00", "bluetooth off"),
        (0x0060, _word(0, r["move_gate"]) + _word(1, r["still_gate"]) + _word(2, IDLE_S), "gates"),
        (
            0x0064,
            _word(0, 0xFFFF) + _word(1, r["move_sens"]) + _word(2, r["still_sens"]),
            "sensitivities",
        ),
        (0x0061, b"", "read back"),
        (RESTART, b"", "restart"),
    ):
        if why and cmd != RESTART:
            continue
        got = None
        for _ in range(3):
            uart.write(frame(cmd, value))
            got = await _ack(uart, cmd)
            if got is not None:
                break
        if got is None:
            w = "no answer to " + what
        elif got[:2] != b"\x00\x00":
            w = "%s refused (status %d)" % (what, got[0] | got[1] << 8)
        elif cmd == 0x0061:
            w = check(got, r)
            w = w and "read back: " + w
        else:
            w = None
        why = why or w
    return why
