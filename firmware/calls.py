# The emergency call, as nurse-call rooms know it. Pure logic: the app turns
# its decisions into lamp, buzzer and MQTT messages.
#
#   press ──▶ calling (fast blink, buzzer) ── call_ack received ──▶ slow blink
#     ── acknowledged ──▶ steady ── arrived ──▶ steady, buzzer off ── resolved ──▶ off
#
# `press` is re-published every 3 s until the server says `received` (or
# later). The staff key pressed once says `presence` (staff are in the room:
# buzzer off at once), pressed again `reset` (the call is over: lamp off);
# each is re-published every 3 s too, until the server's status has caught
# up (`arrived` for presence, `resolved` for reset): a broker can lose what
# it acknowledged, and the server dedupes (its statuses only move forward).
# The mother cannot cancel: pressing or holding the button never ends a
# call. The whole state is saved on every change, so a call survives a
# reboot: one not yet `received` is pressed again after it, and the lamp
# shows the last status at once, with or without a network.
from contract import CALL_ACK_STATUSES, PRESS_REPEAT_MS
from ticks import ticks_diff

ORDER = ("calling",) + CALL_ACK_STATUSES  # noqa: RUF005 (no PEP 448 unpacking on MicroPython)
LAMP = {
    "calling": "fast",
    "received": "slow",
    "acknowledged": "steady",
    "arrived": "steady",
    "resolved": "off",
}
OUTBOX_MAX = 8


def _rank(status):
    return ORDER.index(status) if status in ORDER else -1


class Calls:
    def __init__(self, store=None):
        self._store = store  # load/save/remove (store.py): the call is saved on every change
        d = store.load("call") if store else None
        d = d if isinstance(d, dict) else {}
        self.id = d.get("id")
        self.status = d.get("status")  # the server's latest word; "calling" until received
        self.local = d.get("local")  # what the staff key said in the room: arrived, resolved
        self.staff = d.get("staff", 0)
        self.test = bool(d.get("test"))
        self.outbox = list(d.get("outbox") or [])  # [action, call_id, status], in order
        self.pressed_at = None  # ticks of the last `press` published; None: at once
        self.acted_at = None  # ticks of the last `presence`/`reset` published

    def shown(self):
        """The status on the lamp: the further of the server's and the room's."""
        if self.id is None:
            return None
        return self.local if _rank(self.local) > _rank(self.status) else self.status

    def view(self):
        """(lamp pattern, buzzer on) for what is shown."""
        s = self.shown()
        return LAMP.get(s, "off"), s in ("calling", "received", "acknowledged")

    def active(self):
        return self.id is not None and self.shown() != "resolved"

    def press(self, call_id, test=False):
        """The emergency button: a new call unless one is open (True if it
        was raised). A call reset in the room before the server heard of it
        is raised again, with its id. Not saved: the caller lights the lamp
        first, then save() (a flash write can take hundreds of ms)."""
        if self.active():
            return False
        if self.id is None or self.status != "calling":
            self.id, self.status, self.test = call_id, "calling", test
            self.pressed_at = None
        self.local = None
        self.staff = 0
        return True

    def staff_key(self):
        """`presence` the first time, `reset` the second; None without a
        call. Not saved, as press()."""
        if not self.active():
            return None
        self.staff += 1
        action, self.local = ("presence", "arrived") if self.staff == 1 else ("reset", "resolved")
        self._queue([action, self.id, None], False)
        return action

    def ack(self, call_id, status):
        """A `cmd call_ack`: the status now shown (and reported with `shown`),
        or None when it changes nothing (a repeat, or older than what we have)."""
        if call_id != self.id:
            # A call the node forgot (a reboot after `received`): the server
            # re-sends its status when the node is back online. Adopt it.
            if status == "resolved" or self.active():
                return None
            self.id, self.local, self.staff, self.test = call_id, None, 0, False
        elif _rank(status) <= _rank(self.status):
            return None
        self.status = status
        self._queue(["shown", call_id, status])
        return status

    def press_due(self, now):
        """Publish `press` (again) now? Every 3 s until the server received it."""
        if self.status != "calling":
            return False
        if self.pressed_at is None:
            return True
        d = ticks_diff(now, self.pressed_at)
        return d >= PRESS_REPEAT_MS or d < 0  # (< 0: so long ago that the ticks wrapped)

    def action_due(self, now):
        """`presence` or `reset` to publish again now, or None: every 3 s
        while the room is further than the server, once the first one went
        out (the outbox) and the server has received the call."""
        if self.id is None or self.status == "calling" or _rank(self.local) <= _rank(self.status):
            return None
        for item in self.outbox:
            if item[0] != "shown":
                return None
        t = self.acted_at
        if t is not None:
            d = ticks_diff(now, t)
            if 0 <= d < PRESS_REPEAT_MS:
                return None
        return "presence" if self.local == "arrived" else "reset"

    def next_out(self):
        """The next queued message that may go out; `presence` and `reset`
        wait until the server has received the call they are about."""
        if not self.outbox:
            return None
        item = self.outbox[0]
        if item[1] == self.id and self.status == "calling":
            return None
        return item

    def sent(self):
        self.outbox.pop(0)
        self._changed()

    def _queue(self, item, save=True):
        if len(self.outbox) >= OUTBOX_MAX:
            self.outbox.pop(0)  # eight unsent events: the oldest goes
        self.outbox.append(item)
        if save:
            self._changed()

    def save(self):
        self._changed()

    def _changed(self):
        st = self._store
        if st:
            # Kept until the server says `resolved`: a reset made in the room
            # is repeated until then, across a reboot too.
            if (self.id is None or self.status == "resolved") and not self.outbox:
                st.remove("call")
            else:
                st.save(
                    "call",
                    {
                        "id": self.id,
                        "status": self.status,
                        "local": self.local,
                        "staff": self.staff,
                        "test": self.test,
                        "outbox": self.outbox,
                    },
                )
