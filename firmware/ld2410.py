# HLK-LD2410 radar: data frames parsed from the UART byte stream (256000 8N1).
# Pure logic, no hardware imports: runs on the ESP32 and on the unix port.
#
# Frame: F4 F3 F2 F1 | len (2, LE) | type, AA, state, move_cm (2), move_energy,
#        still_cm (2), still_energy, detect_cm (2), [engineering data], 55 00 | F8 F7 F6 F5
#
# A reading is a tuple (memory is scarce on the board):
#   (state, move_cm, move_energy, still_cm, still_energy, detect_cm)
#
# Radar (below) makes the readings safe to act on: "none" when frames stop
# coming (unplugged, dead), `stuck` when a still target has not moved for
# radar_stuck_s (a ghost the radar keeps reporting), and how long a still
# presence has lasted (still_s, for the welfare check).
from ticks import ticks_diff

HEADER = b"\xf4\xf3\xf2\xf1"
FOOTER = b"\xf8\xf7\xf6\xf5"
MAX_LEN = 64  # a longer length field is garbage, not a frame
STATES = ("none", "moving", "still", "both")
STATE, MOVE_CM, MOVE_ENERGY, STILL_CM, STILL_ENERGY, DETECT_CM = 0, 1, 2, 3, 4, 5


def encode(state, move_cm=0, move_energy=0, still_cm=0, still_energy=0, detect_cm=0):
    """A basic-mode data frame, as the radar sends it (the unix board uses it)."""
    body = bytes(
        (
            0x02,
            0xAA,
            STATES.index(state),
            move_cm & 0xFF,
            move_cm >> 8,
            move_energy,
            still_cm & 0xFF,
            still_cm >> 8,
            still_energy,
            detect_cm & 0xFF,
            detect_cm >> 8,
            0x55,
            0x00,
        )
    )
    return HEADER + bytes((len(body), 0)) + body + FOOTER


class Parser:
    """Feed it bytes as they come; it returns whole readings. Garbage, split
    frames and corrupt frames are skipped by resynchronising on the header."""

    def __init__(self):
        self._buf = b""
        self.frames = 0
        self.dropped = 0  # bytes thrown away while resynchronising

    def feed(self, data):
        buf = self._buf + data
        out = []
        while True:
            start = buf.find(HEADER)
            if start < 0:
                if len(buf) > 3:  # keep what may be the start of a split header
                    self.dropped += len(buf) - 3
                    buf = buf[-3:]
                break
            if start:
                self.dropped += start
                buf = buf[start:]
            if len(buf) < 6:
                break
            n = buf[4] | buf[5] << 8
            end = 6 + n
            if 13 <= n <= MAX_LEN and len(buf) < end + 4:
                break  # wait for the rest of the frame
            b = buf[6:end]
            # Only the two data frames, each with its own length: basic (type
            # 2, 13 bytes) and engineering (type 1, 35: gate energies after
            # the target). Anything else is not a reading, whatever it says.
            kind = (n == 13 and b[0] == 2) or (n == 35 and b[0] == 1)
            if (
                not kind
                or buf[end : end + 4] != FOOTER
                or b[1] != 0xAA
                or b[-2] != 0x55
                or b[-1] != 0
                or b[2] > 3
            ):
                self.dropped += 1  # corrupt: look for the next header after this one
                buf = buf[1:]
                continue
            buf = buf[end + 4 :]
            self.frames += 1
            out.append(
                (STATES[b[2]], b[3] | b[4] << 8, b[5], b[6] | b[7] << 8, b[8], b[9] | b[10] << 8)
            )
        self._buf = buf
        return out


GAP_MS = 5000  # a target that vanishes for less than this keeps its still_s
CAP_MS = 1 << 29  # every duration below stops growing here (~6.2 days): a small int on the board


class Radar:
    """Durations (since the latest frame, still for, gone for) are added up
    in the small steps between two calls (a frame every ~100 ms, status()
    every 100 ms), never taken as one ticks_diff: that is only meaningful
    within 2**29 ms on the ESP32, and a still_s that wrapped would go
    negative (the gateway refuses it)."""

    def __init__(self, timeout_ms=5000, stuck_ms=14400000):
        self.parser = Parser()
        self.timeout_ms = timeout_ms
        self.stuck_ms = stuck_ms
        self.last = None  # the latest reading (a tuple, above)
        self._t = None  # ticks of the latest step
        self._age = 0  # ms since the latest frame
        self._still = None  # ms the target has been still, None if not
        self._gone = None  # ms no target has been seen, None if one is

    def _step(self, now):
        t = self._t
        self._t = now
        d = 0 if t is None else ticks_diff(now, t)
        if d <= 0:  # (negative: a step older than the last, from the other task)
            return
        self._age = min(self._age + d, CAP_MS)
        if self._still is not None:
            self._still = min(self._still + d, CAP_MS)
        if self._gone is not None:
            self._gone = min(self._gone + d, CAP_MS)

    def feed(self, data, now):
        self._step(now)
        for r in self.parser.feed(data):
            self.last = r
            self._age = 0
            state = r[0]
            if state == "still":
                if self._still is None:
                    self._still = 0
                self._gone = None
            elif state == "none":
                if self._gone is None:
                    self._gone = 0
            else:  # moving (or moving and still): she moved
                self._still = 0 if state == "both" else None
                self._gone = None
        if self._gone is not None and self._gone >= GAP_MS:
            self._still = None

    def status(self, now):
        """(state, still_s, stale, stuck). The state is "none" when the radar
        is stale (no frames). `stuck`: still for longer than stuck_ms; the
        fusion then ignores the radar (the door lock still counts)."""
        self._step(now)
        last = self.last
        stale = last is None or self._age > self.timeout_ms
        held = self._still or 0
        state = "none" if stale or last is None else last[0]
        return state, held // 1000 if state == "still" else 0, stale, held > self.stuck_ms
