# ESPHome-style binary filters with the time passed in (ms), so the same
# code runs on the board and in tests with an exact clock.
from ticks import ticks_diff


class Delayed:
    """`delayed_on`: true only after the input has been true for on_ms;
    `delayed_off`: false only after it has been false for off_ms. With
    on_ms == off_ms it is a debounce: a contact must hold a new level that
    long before it counts."""

    def __init__(self, on_ms=0, off_ms=0, initial=False):
        self.on_ms = on_ms
        self.off_ms = off_ms
        self.value = initial
        self._last = initial
        self._since = 0

    def update(self, raw, now):
        if raw != self._last:
            self._last, self._since = raw, now
        if raw != self.value and ticks_diff(now, self._since) >= (
            self.on_ms if raw else self.off_ms
        ):
            self.value = raw
        return self.value


class Occupancy:
    """The door lock is the authoritative "in use"; the radar's presence
    (delayed_off, so a still mother is not lost between frames) covers an
    unlocked door. update() returns (occupied, source)."""

    def __init__(self, radar_on_ms=2000, radar_off_ms=30000):
        self.radar = Delayed(radar_on_ms, radar_off_ms)

    def update(self, door_locked, radar_state, now):
        present = self.radar.update(radar_state != "none", now)
        if door_locked:
            return True, "door"
        return present, "radar" if present else "fused"
