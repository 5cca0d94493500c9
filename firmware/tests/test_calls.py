from calls import Calls


class Memory:
    """store.py's interface in a dict: what the call saves on every change."""

    def __init__(self):
        self.d = {}

    def load(self, name, default=None):
        return self.d.get(name, default)

    def save(self, name, obj):
        import json

        self.d[name] = json.loads(json.dumps(obj))  # only what survives JSON

    def remove(self, name):
        self.d.pop(name, None)


def test_a_call_through_every_status():
    c = Calls(Memory())
    assert c.view() == ("off", False) and not c.active()
    assert c.press("n-1-1-1") is True
    assert c.view() == ("fast", True) and c.press_due(0)
    c.pressed_at = 0
    assert not c.press_due(2999) and c.press_due(3000)  # again every 3 s
    assert c.press("n-1-2-2") is False and c.id == "n-1-1-1"  # a second press: the same call
    assert c.ack("n-1-1-1", "received") == "received"
    assert c.view() == ("slow", True) and not c.press_due(10**6)
    assert c.ack("n-1-1-1", "received") is None  # a repeat changes nothing
    assert c.ack("n-1-1-1", "acknowledged") == "acknowledged" and c.view() == ("steady", True)
    assert c.ack("n-1-1-1", "received") is None  # older than what is shown
    assert c.ack("n-1-1-1", "arrived") == "arrived" and c.view() == ("steady", False)
    assert c.ack("n-1-1-1", "resolved") == "resolved" and c.view() == ("off", False)
    assert not c.active()
    shown = []
    while c.next_out():
        shown.append(c.next_out()[2])
        c.sent()
    assert shown == ["received", "acknowledged", "arrived", "resolved"]


def test_the_mother_cannot_cancel_staff_resets_in_the_room():
    c = Calls(Memory())
    assert c.staff_key() is None  # no call: the key does nothing
    c.press("n-1-1-1")
    for _ in range(5):
        c.press("n-1-1-9")  # pressing again and again never cancels
    assert c.active() and c.id == "n-1-1-1"
    assert c.staff_key() == "presence" and c.view() == ("steady", False)
    assert c.next_out() is None  # presence waits until the server has the call
    c.ack("n-1-1-1", "received")
    assert c.next_out() == ["presence", "n-1-1-1", None]
    c.sent()
    c.sent()  # the `shown received`
    assert c.staff_key() == "reset" and c.view() == ("off", False) and not c.active()
    assert c.next_out() == ["reset", "n-1-1-1", None]


def test_a_call_not_received_survives_a_reboot():
    mem = Memory()
    c = Calls(mem)
    c.press("n-1-1-1", test=True)
    assert "call" not in mem.d  # the lamp is lit first (node.panel), then saved
    c.save()
    again = Calls(mem)  # the reboot
    assert again.id == "n-1-1-1" and again.test and again.view() == ("fast", True)
    assert again.press_due(123)  # pressed again at once
    again.ack("n-1-1-1", "acknowledged")
    assert Calls(mem).view() == ("steady", True)
    again.ack("n-1-1-1", "resolved")
    while again.next_out():
        again.sent()
    assert "call" not in mem.d  # nothing left to remember


def test_a_status_for_a_forgotten_call_is_adopted():
    c = Calls(Memory())
    assert c.ack("n-1-1-1", "resolved") is None  # nothing to show
    assert c.ack("n-1-1-1", "acknowledged") == "acknowledged" and c.view() == ("steady", True)


def test_the_outbox_is_bounded():
    c = Calls(Memory())
    c.press("n-1-1-1")
    c.ack("n-1-1-1", "received")
    for _ in range(20):
        c._queue(["shown", "n-1-1-1", "received"])
    assert len(c.outbox) == 8  # a node offline for long keeps the latest eight


def test_presence_and_reset_are_repeated_until_the_server_catches_up():
    mem = Memory()
    c = Calls(mem)
    c.press("n-1-1-1")
    c.staff_key()
    assert c.action_due(0) is None  # the server has not received the call yet
    c.ack("n-1-1-1", "received")
    assert c.action_due(0) is None  # the first `presence` goes through the outbox
    while c.next_out():
        c.sent()
    c.acted_at = 0  # (the publisher sets it when it sends)
    assert c.action_due(2999) is None and c.action_due(3000) == "presence"
    c.staff_key()
    assert c.next_out() == ["reset", "n-1-1-1", None]
    c.sent()
    c.acted_at = 3000
    assert c.action_due(6000) == "reset"
    assert Calls(mem).action_due(0) == "reset"  # after a reboot too (the call is kept)
    c.ack("n-1-1-1", "arrived")
    assert c.action_due(9000) == "reset"  # arrived is not enough for a reset
    c.ack("n-1-1-1", "resolved")
    assert c.action_due(12000) is None
    while c.next_out():
        c.sent()
    assert "call" not in mem.d
