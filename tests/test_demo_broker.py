"""The demo's embedded broker (cli/embedded_broker.py) does what the
demo's clients rely on: QoS 1, retained messages, last wills, persistent
sessions, wildcards; and `stop()` leaves nothing running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Callable

import aiomqtt
import pytest

from cli.embedded_broker import EmbeddedBroker, topic_matches, valid_filter
from tests.support import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    b = EmbeddedBroker("127.0.0.1", free_port())
    await b.start()
    yield b
    await b.stop()


async def until(check: Callable[[], object], what: str, within: float = 20) -> None:
    """Poll `check` until it is truthy; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def client(
    broker: EmbeddedBroker, name: str, *, clean_session: bool | None = None
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=name, timeout=10, clean_session=clean_session
    )


class Inbox:
    """Every message a client receives, read by a background task."""

    def __init__(self, c: aiomqtt.Client) -> None:
        self.messages: list[aiomqtt.Message] = []
        self._task = asyncio.create_task(self._read(c))

    async def _read(self, c: aiomqtt.Client) -> None:
        async for m in c.messages:
            self.messages.append(m)

    def payloads(self, topic: str | None = None) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if topic is None or m.topic.value == topic]

    async def close(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


class Raw:
    """A hand-made MQTT 3.1.1 connection, for what a client library hides."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(
        cls,
        broker: EmbeddedBroker,
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes] | None = None,
    ) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        raw = cls(reader, writer)
        flags = (0x02 if clean else 0) | (0x04 | 0x08 | 0x20 if will else 0)
        body = (
            _s(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _s(client_id.encode())
        )
        if will:
            body += _s(will[0].encode()) + _s(will[1])
        raw.send(0x10, body)
        kind, body = await raw.packet()
        assert kind == 0x20 and body[1] == 0, (kind, body)
        return raw

    def send(self, head: int, body: bytes) -> None:
        length, enc = len(body), b""
        while True:
            byte, length = length % 128, length // 128
            enc += bytes([byte | (0x80 if length else 0)])
            if not length:
                break
        self.writer.write(bytes([head]) + enc + body)

    async def packet(self) -> tuple[int, bytes]:
        head = (await self.reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return head, await self.reader.readexactly(length)

    def subscribe(self, pattern: str, qos: int = 1, pid: int = 1) -> None:
        self.send(0x82, struct.pack("!H", pid) + _s(pattern.encode()) + bytes([qos]))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):  # a reset on close is fine
            await self.writer.wait_closed()


def _s(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def test_topic_filters() -> None:
    assert topic_matches("mr/v1/dev/#", "mr/v1/dev/n-1/status")
    assert topic_matches("mr/v1/dev/#", "mr/v1/dev")
    assert topic_matches("mr/v1/dev/+/call", "mr/v1/dev/n-1/call")
    assert not topic_matches("mr/v1/dev/+/call", "mr/v1/dev/n-1/cmd")
    assert not topic_matches("mr/v1/dev/+", "mr/v1/dev/n-1/cmd")
    assert topic_matches("#", "a/b") and not topic_matches("#", "$SYS/x")
    assert not topic_matches("+/x", "$SYS/x") and topic_matches("$SYS/+", "$SYS/x")
    assert all(valid_filter(f) for f in ("#", "a/+/b", "+", "a/#"))
    assert not any(valid_filter(f) for f in ("", "a/#/b", "a#", "a/b+", "$share/g/a"))


async def test_qos1_wildcards_and_retained(broker: EmbeddedBroker) -> None:
    async with client(broker, "pub") as pub:
        await pub.publish("mr/v1/dev/n-1/status", b"online", qos=1, retain=True)
        await pub.publish("mr/v1/dev/n-2/status", b"online", qos=1, retain=True)
        await pub.publish("mr/v1/dev/n-2/status", b"", qos=1, retain=True)  # cleared
        async with client(broker, "gw") as gw:
            inbox = Inbox(gw)
            await gw.subscribe("mr/v1/dev/#", qos=1)
            await until(lambda: inbox.messages, "the retained status")
            first = inbox.messages[0]
            assert (first.topic.value, first.payload, first.retain) == (
                "mr/v1/dev/n-1/status",
                b"online",
                True,
            )
            await pub.publish("mr/v1/dev/n-1/occupancy", b'{"seq":1}', qos=1)
            await pub.publish("mr/v1/other", b"x", qos=1)
            await until(lambda: len(inbox.messages) >= 2, "the live message")
            live = inbox.messages[1]
            assert (live.topic.value, live.qos, live.retain) == (
                "mr/v1/dev/n-1/occupancy",
                1,
                False,
            )
            assert inbox.payloads("mr/v1/dev/n-2/status") == []
            assert inbox.payloads("mr/v1/other") == []
            await inbox.close()


async def test_a_node_hears_only_its_own_topics(broker: EmbeddedBroker) -> None:
    """amqtt sent each connecting client the retained messages of everyone's
    subscriptions: the simulator's "malformed command ignored"."""
    async with client(broker, "gw", clean_session=False) as gw:
        await gw.subscribe("mr/v1/dev/#", qos=1)
        await gw.publish("mr/v1/dev/n-9/status", b"online", qos=1, retain=True)
    async with client(broker, "n-1", clean_session=False) as node:
        inbox = Inbox(node)
        await node.subscribe("mr/v1/dev/n-1/cmd", qos=1)
        await node.publish("mr/v1/dev/n-1/status", b"online", qos=1, retain=True)
        async with client(broker, "server") as server:
            await server.publish("mr/v1/dev/n-1/cmd", json.dumps({"cmd": "call_ack"}), qos=1)
        await until(lambda: inbox.messages, "the command")
        assert [m.topic.value for m in inbox.messages] == ["mr/v1/dev/n-1/cmd"]
        await inbox.close()


async def test_a_persistent_session_keeps_what_came_while_away(broker: EmbeddedBroker) -> None:
    async with client(broker, "gw", clean_session=False) as gw:
        await gw.subscribe("mr/v1/dev/#", qos=1)
    async with client(broker, "node") as node:
        for seq in range(200):
            await node.publish("mr/v1/dev/n-1/occupancy", str(seq).encode(), qos=1)
        await node.publish("mr/v1/dev/n-1/telemetry", b"qos0 is not kept", qos=0)
    async with client(broker, "gw", clean_session=False) as gw:  # no new subscribe
        inbox = Inbox(gw)
        await until(lambda: len(inbox.messages) >= 200, "the queued messages")
        assert inbox.payloads() == [str(seq).encode() for seq in range(200)]
        await inbox.close()
    # A clean session forgets the subscription.
    async with client(broker, "gw", clean_session=True):
        pass
    async with client(broker, "node") as node:
        await node.publish("mr/v1/dev/n-1/occupancy", b"later", qos=1)
    async with client(broker, "gw", clean_session=False) as gw:
        inbox = Inbox(gw)
        async with client(broker, "probe") as probe:  # a round trip after it
            await probe.subscribe("probe", qos=1)
            await probe.publish("probe", b"p", qos=1)
            async for _ in probe.messages:
                break
        assert inbox.messages == []
        await inbox.close()


async def test_unacknowledged_messages_come_again_with_dup(broker: EmbeddedBroker) -> None:
    raw = await Raw.connect(broker, "node", clean=False)
    raw.subscribe("mr/v1/dev/node/cmd")
    assert (await raw.packet())[0] == 0x90  # SUBACK
    async with client(broker, "server") as server:
        await server.publish("mr/v1/dev/node/cmd", b"ack me", qos=1)
    head, body = await raw.packet()
    assert head & 0xF0 == 0x30 and not head & 0x08 and body.endswith(b"ack me")
    await raw.close()  # gone without a PUBACK
    raw = await Raw.connect(broker, "node", clean=False)
    head, body = await raw.packet()
    assert head & 0xF0 == 0x30 and head & 0x08, "sent again, flagged DUP"
    assert body.endswith(b"ack me")
    raw.send(0x40, body[2 + struct.unpack("!H", body[:2])[0] :][:2])  # PUBACK
    await raw.close()


async def test_last_wills(broker: EmbeddedBroker) -> None:
    async with client(broker, "gw") as gw:
        inbox = Inbox(gw)
        await gw.subscribe("mr/v1/dev/+/status", qos=1)
        # Vanishes without DISCONNECT: its will goes out, retained.
        gone = await Raw.connect(broker, "n-gone", will=("mr/v1/dev/n-gone/status", b"offline"))
        gone.writer.transport.abort()
        # Says DISCONNECT: no will.
        polite = await Raw.connect(
            broker, "n-polite", will=("mr/v1/dev/n-polite/status", b"offline")
        )
        polite.send(0xE0, b"")
        await polite.close()
        # Silent past 1.5 × its keepalive.
        silent = await Raw.connect(
            broker, "n-silent", keepalive=1, will=("mr/v1/dev/n-silent/status", b"offline")
        )
        # Taken over by a new connection with its client id (a node back after
        # a Wi-Fi drop, its old TCP connection still half open).
        twice = await Raw.connect(broker, "n-twice", will=("mr/v1/dev/n-twice/status", b"offline"))
        again = await Raw.connect(broker, "n-twice")
        await until(
            lambda: all(
                inbox.payloads(f"mr/v1/dev/{d}/status") == [b"offline"]
                for d in ("n-gone", "n-silent", "n-twice")
            ),
            "three wills",
        )
        assert inbox.payloads("mr/v1/dev/n-polite/status") == []
        # The silent one and the one taken over were closed by the broker.
        assert await asyncio.wait_for(silent.reader.read(), 20) == b""
        assert await asyncio.wait_for(twice.reader.read(), 20) == b""
        for raw in (silent, twice, again):
            await raw.close()
        await inbox.close()
    async with client(broker, "late") as late:
        inbox = Inbox(late)
        await late.subscribe("mr/v1/dev/n-gone/status", qos=1)
        await until(lambda: inbox.messages, "the retained will")
        assert inbox.messages[0].retain and inbox.payloads() == [b"offline"]
        await inbox.close()


async def test_garbage_closes_only_that_connection(broker: EmbeddedBroker) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 20) == b""  # closed by the broker
    writer.close()
    raw = await Raw.connect(broker, "fine")
    raw.send(0x30, _s(b"a/#") + b"wildcard in a topic name")  # a protocol error
    assert await asyncio.wait_for(raw.reader.read(), 20) == b""
    async with client(broker, "still-fine") as c:
        await c.subscribe("t", qos=1)
        await c.publish("t", b"ok", qos=1)
        async for m in c.messages:
            assert m.payload == b"ok"
            break


async def test_stop_leaves_nothing_behind() -> None:
    b = EmbeddedBroker("127.0.0.1", free_port())
    before = asyncio.all_tasks()
    await b.start()
    clients = []
    for i in range(20):
        raw = await Raw.connect(b, f"n-{i}", clean=False)
        raw.subscribe(f"mr/v1/dev/n-{i}/cmd")
        assert (await raw.packet())[0] == 0x90
        clients.append(raw)
    await b.stop()
    assert [t for t in asyncio.all_tasks() if t not in before] == []
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", b.port)
    for raw in clients:
        assert await asyncio.wait_for(raw.reader.read(), 20) == b""
        await raw.close()
