# The MQTT client's sends never hang (issue 13, item 6): a socket that takes
# nothing ends the send at its deadline, a cancelled send leaves the client
# free for the next connection, a task waiting behind a stuck send gives up
# too, and a send blocked when its session ends is over at once (offline),
# leaving the next connection's packet alone. SEND_MS is made short here;
# the node's is 10 s.
import asyncio

import mqtt


class Stuck:
    """A socket whose send buffer never drains (a broker that stopped reading)."""

    def write(self, data):
        return None


class Dropped(Stuck):
    """A stuck socket that its session then closes: a write raises EBADF,
    as the port's own sockets do once closed."""

    closed = False

    def write(self, data):
        if self.closed:
            raise OSError(9)
        return None

    def close(self):
        self.closed = True


class Open:
    def __init__(self):
        self.sent = b""

    def write(self, data):
        self.sent += bytes(data)
        return len(data)


def client():
    mqtt.SEND_MS = 100
    c = mqtt.Client("n-test-0101", "127.0.0.1", 1883)
    c.sock = Stuck()
    return c


async def outcome(coro):
    try:
        await coro
        return "sent"
    except mqtt.MQTTError as e:
        return str(e)


def test_a_send_the_socket_never_takes_ends_at_its_deadline():
    c = client()
    assert asyncio.run(outcome(c.send(b"\xc0\x00"))) == "send timed out"
    assert c.dead and not c._busy  # Client.run gives the connection up; the flag is free


def test_a_send_waiting_behind_a_stuck_one_gives_up_too():
    c = client()

    async def go():
        first = asyncio.create_task(outcome(c.send(b"\x30\x03\x00\x01x")))
        await asyncio.sleep_ms(0)  # the first one holds the socket
        second = await outcome(c.send(b"\xc0\x00"))
        return await first, second

    first, second = asyncio.run(go())
    assert first == "send timed out", first
    assert second.startswith("send"), second  # busy to the end, or timed out in its turn
    assert not c._busy


def test_a_send_cancelled_half_way_leaves_the_client_free():
    c = client()

    async def go():
        t = asyncio.create_task(c.send(b"\x30\x03\x00\x01x"))
        await asyncio.sleep_ms(20)  # blocked in the write
        assert c._busy
        t.cancel()  # the session given up (Client.run, the supervisor)
        await asyncio.sleep_ms(0)
        assert not c._busy
        c.sock = Open()  # the next connection's socket
        await c.send(b"\xc0\x00")  # at once: nothing left waiting for the old one
        return c.sock.sent

    assert asyncio.run(go()) == b"\xc0\x00"


def test_a_send_blocked_when_its_session_ends_gives_up_at_once():
    c = client()
    mqtt.SEND_MS = 10000  # not by its deadline
    old = c.sock = Dropped()

    async def go():
        t = asyncio.create_task(outcome(c.send(b"\x30\x03\x00\x01x")))
        await asyncio.sleep_ms(20)  # blocked in the write
        # The session ends (as session()'s finally does): its socket closed
        # and forgotten, the flag freed. The next connection's session is
        # then half-way through a packet of its own.
        c.sock = None
        c._busy = False
        old.close()
        new = c.sock = Open()
        c._busy = new
        return await t, c._busy is new

    got, kept = asyncio.run(go())
    assert got == "offline", got  # over, and an MQTTError: the publisher's task lives on
    assert kept and not c.dead  # the next connection left alone
