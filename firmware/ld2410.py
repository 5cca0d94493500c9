# HLK-LD2410 radar: data frames parsed from the UART byte stream (256000 8N1).
# Pure logic, no hardware imports: runs on the ESP32 and on the unix port.
#
# Frame: F4 F3 F2 F1 | len (2, LE) | type, AA, state, move_cm (2), move_energy,
#        still_cm (2), still_energy, detect_cm (2), [engineering data], 55 00 | F8 F7 F6 F5

HEADER = b"\xf4\xf3\xf2\xf1"
FOOTER = b"\xf8\xf7\xf6\xf5"
MAX_LEN = 64  # a longer length field is garbage, not a frame
STATES = ("none", "moving", "still", "both")


class Reading:
    __slots__ = ("state", "move_cm", "move_energy", "still_cm", "still_energy", "detect_cm")

    def __init__(self, state, move_cm, move_energy, still_cm, still_energy, detect_cm):
        self.state = state
        self.move_cm = move_cm
        self.move_energy = move_energy
        self.still_cm = still_cm
        self.still_energy = still_energy
        self.detect_cm = detect_cm

    def __repr__(self):
        return "Reading(%s, move=%dcm/%d, still=%dcm/%d)" % (
            self.state, self.move_cm, self.move_energy, self.still_cm, self.still_energy)


def encode(state, move_cm=0, move_energy=0, still_cm=0, still_energy=0, detect_cm=0):
    """A basic-mode data frame (what the radar sends; the unix board uses it)."""
    body = bytes([0x02, 0xAA, STATES.index(state),
                  move_cm & 0xFF, move_cm >> 8, move_energy,
                  still_cm & 0xFF, still_cm >> 8, still_energy,
                  detect_cm & 0xFF, detect_cm >> 8, 0x55, 0x00])
    return HEADER + bytes([len(body) & 0xFF, len(body) >> 8]) + body + FOOTER


class Parser:
    """Feed it bytes as they come; it returns whole readings. Garbage, split
    frames and corrupt frames are skipped by resynchronising on the header."""

    def __init__(self):
        self._buf = bytearray()
        self.frames = 0
        self.dropped = 0  # bytes thrown away while resynchronising

    def feed(self, data):
        self._buf.extend(data)
        out = []
        while True:
            start = self._buf.find(HEADER)
            if start < 0:
                keep = 3  # a header may be split across reads
                if len(self._buf) > keep:
                    self.dropped += len(self._buf) - keep
                    self._buf = self._buf[-keep:]
                return out
            if start:
                self.dropped += start
                self._buf = self._buf[start:]
            if len(self._buf) < 6:
                return out
            length = self._buf[4] | (self._buf[5] << 8)
            if length < 13 or length > MAX_LEN:
                self._skip()
                continue
            total = 6 + length + 4
            if len(self._buf) < total:
                return out  # wait for the rest of the frame
            frame = bytes(self._buf[:total])
            reading = self._decode(frame, length)
            if reading is None:
                self._skip()
                continue
            self._buf = self._buf[total:]
            self.frames += 1
            out.append(reading)

    def _skip(self):
        self.dropped += 1
        self._buf = self._buf[1:]

    @staticmethod
    def _decode(frame, length):
        body = frame[6:6 + length]
        if frame[6 + length:] != FOOTER or body[1] != 0xAA:
            return None
        if body[-2] != 0x55 or body[-1] != 0x00 or body[2] > 3:
            return None
        return Reading(STATES[body[2]], body[3] | (body[4] << 8), body[5],
                       body[6] | (body[7] << 8), body[8], body[9] | (body[10] << 8))
