"""The gateway's MQTT link on a real Mosquitto: paho driven from the event
loop over the buffered socket, manual ack, exact back-pressure."""

from __future__ import annotations

import asyncio
import socket

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.mqtt_link import Inbox, MqttLink
from mamaroom.config import MqttSettings
from mamaroom.mqtt_socket import BufferedSocket
from tests.support import Mosquitto, wait_for


def test_buffered_socket_serves_small_reads_and_batches_writes() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    sock = BufferedSocket(a)
    try:
        b.sendall(b"\x30\x05hello\x40")
        wait_for(lambda: sock.pending() > 0 or _readable(a), timeout=5)
        assert sock.recv(1) == b"\x30"  # one kernel read, then from memory
        assert sock.pending() == 7
        assert sock.recv(1) == b"\x05"
        assert sock.recv(10) == b"hello\x40"  # a short read, as sockets give
        assert sock.pending() == 0
        try:
            sock.recv(1)
            raise AssertionError("an empty non-blocking socket must raise")
        except BlockingIOError:
            pass
        b.sendall(b"xy")
        wait_for(lambda: _readable(a), timeout=5)
        assert sock.recv(2) == b"xy"
        # Writes wait in memory until flush(): one segment for many packets.
        assert sock.send(b"\x40\x02\x00\x01") == 4
        assert sock.send(b"\x40\x02\x00\x02") == 4
        assert sock.unsent == 8
        assert sock.flush() and sock.unsent == 0
        b.settimeout(5)
        assert b.recv(100) == b"\x40\x02\x00\x01\x40\x02\x00\x02"
    finally:
        a.close()
        b.close()


def test_buffered_socket_hands_out_whole_frames_and_limits_paho_to_one() -> None:
    """The gateway's own PUBLISH parsing sees only complete frames; paho reads
    exactly the frame it is given; the peer's close reaches paho last."""
    a, b = socket.socketpair()
    a.setblocking(False)
    sock = BufferedSocket(a)
    publish = b"\x32\x0c\x00\x03a/b\x00\x07hello"  # PUBLISH QoS 1, mid 7
    suback = b"\x90\x03\x00\x01\x01"
    big = b"\x30\x80\x01" + b"\x00\x01t" + b"x" * 125  # 128-byte body: 2 length bytes
    try:
        b.sendall(publish + suback + big[:50])
        wait_for(lambda: sock.fill() or sock.pending() > 0, timeout=5)
        assert sock.next_frame() == (0x32, 2, len(publish))
        sock.consume(len(publish))
        header, start, end = sock.next_frame() or (0, 0, 0)
        assert header == 0x90 and end - start == 3
        sock.limit = end  # paho may read this frame and not one byte more
        assert sock.recv(1) == b"\x90" and sock.recv(1) == b"\x03"
        assert sock.recv(100) == b"\x00\x01\x01"
        try:
            sock.recv(1)
            raise AssertionError("paho must not read past its frame")
        except BlockingIOError:
            pass
        sock.limit = -1
        assert sock.next_frame() is None  # the big one is incomplete
        b.sendall(big[50:])
        wait_for(sock.fill, timeout=5)
        # What was used up is dropped when more comes: offsets restart at 0.
        assert sock.next_frame() == (0x30, 3, len(big))
        sock.consume(len(big))
        assert not sock.ended
        b.close()
        wait_for(sock.fill, timeout=5)
        assert sock.ended and sock.next_frame() is None
        assert sock.recv(1) == b""  # paho learns of the close
    finally:
        a.close()
        b.close()


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def test_link_acks_only_when_told_and_bounds_what_it_holds(broker: Mosquitto) -> None:
    """At most max_pending unacknowledged messages; acking frees room; what was
    not acked comes back (DUP) on the next connection, what was acked never does."""
    topic = "mr/v1/dev/link-test/telemetry"
    settings = MqttSettings(url=broker.url)

    def link(max_pending: int) -> MqttLink:
        return MqttLink(
            settings,
            client_id="link-test",
            subscriptions=[(topic, 1)],
            clean_session=False,
            manual_ack=True,
            max_pending=max_pending,
        )

    async def take(lnk: MqttLink, n: int) -> list[Inbox]:
        got: list[Inbox] = []
        while len(got) < n:
            got += await asyncio.wait_for(lnk.next_batch(1000), 15)
        return got

    async def nothing_more(lnk: MqttLink) -> bool:
        try:
            await asyncio.wait_for(lnk.next_batch(1000), 0.7)
        except TimeoutError:
            return True
        return False

    async def scenario() -> None:
        first = link(50)
        first.start()
        await asyncio.wait_for(first.connected.wait(), 15)
        # paho's socket factory is ours: the buffered socket is in use.
        assert isinstance(first._client.socket(), BufferedSocket)
        await asyncio.sleep(0.3)  # SUBACK
        await asyncio.to_thread(publish, broker.port, topic, 120)
        held = await take(first, 50)
        assert await nothing_more(first)  # 70 more wait at the broker, not here
        assert first.unacked == 50
        for item in held[:30]:
            first.ack(item)
        held += await take(first, 30)  # room for 30 more, and no more than that
        assert await nothing_more(first)
        assert first.unacked == 50
        await first.stop()

        second = link(1000)
        second.start()
        again = await take(second, 90)
        for item in again:
            second.ack(item)
        acked = {int(m.payload) for m in held[:30]}
        assert sorted(int(m.payload) for m in again) == sorted(set(range(120)) - acked)
        # Those held unacked were re-sent as such (DUP); the broker may also mark
        # ones it had written to the socket the link never read.
        assert {int(m.payload) for m in held[30:]} <= {int(m.payload) for m in again if m.dup}
        await asyncio.sleep(0.3)  # the PUBACKs reach the broker
        await second.stop()

        third = link(1000)
        third.start()
        await asyncio.wait_for(third.connected.wait(), 15)
        assert await nothing_more(third)
        await third.stop()

    asyncio.run(scenario())


def publish(port: int, topic: str, count: int) -> None:
    pub = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="link-test-pub", protocol=paho.MQTTv311
    )
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        infos = [pub.publish(topic, f"{i}".encode(), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        pub.disconnect()
        pub.loop_stop()
