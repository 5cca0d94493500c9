"""Which broker can `mamaroom demo` embed? Candidates at the demo's 190 rooms.

    python -m bench.embedded_broker [--rooms 190] [--seconds 60] [--only NAME ...]

Each candidate runs alone in its own process (bench/_broker_runner.py), from
its own venv under var/bench-brokers/ made with pip, on a free port. The load
is the demo's traffic, faster: `--rooms` nodes (client id = device id,
persistent session, retained birth `online`, last will `offline`, their `cmd`
subscribed at QoS 1) connecting within 3 s as the simulator ramps them; a
gateway (persistent session, `mr/v1/dev/#`) and a server (persistent session,
`mr/v1/dev/+/call`, answering each `press` with a QoS 1 `call_ack`). For
`--seconds` every node publishes occupancy every 2 s (QoS 1) and presses a
call every 30 s on average, re-sent every 3 s until acknowledged.

Then what the demo relies on besides: retained messages to a new subscriber,
a persistent session's messages queued while it was away (the gateway's and
the nodes'), last wills of clients that vanish. Then the broker gets SIGINT
with nothing connected: does it exit, and how fast.

Figures: connect time, messages published (PUBACKed) and delivered to the
gateway, calls acknowledged, stray messages at nodes (on topics they never
subscribed), client disconnects, errors the broker logged, the broker's CPU
(its process and children) over the load. Mosquitto, where installed, runs
the same load as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import psutil

from bench.ingest import machine
from mamaroom.config import PROJECT_ROOT
from tests.support import Mosquitto, free_port

RUNNER = Path(__file__).with_name("_broker_runner.py")
VENVS = PROJECT_ROOT / "var" / "bench-brokers"
RESULTS = Path(__file__).with_name("RESULTS-embedded-broker.md")


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str  # the _broker_runner.py KIND, or "mosquitto"
    #: pip requirements of its own venv; None: the project's venv.
    requirements: tuple[str, ...] | None
    note: str = ""


CANDIDATES = [
    Candidate("mosquitto (baseline)", "mosquitto", None, "Debian's mosquitto, shipped config"),
    Candidate("amqtt 0.12.1", "amqtt", ("amqtt==0.12.1",), "what `amqtt>=0.11` resolved to"),
    Candidate("amqtt 0.11.4", "amqtt", ("amqtt==0.11.4",), "the last 0.11"),
    Candidate("amqtt 0.10.1", "amqtt", ("amqtt==0.10.1",), "the last before 0.11's rewrite"),
    Candidate(
        "moat-mqtt 0.42.20",
        "moat-mqtt",
        ("moat-mqtt==0.42.20",),
        "hbmqtt's line via distmqtt, on anyio",
    ),
    Candidate(
        "iotcore 0.4.0",
        "iotcore",
        ("iotcore==0.4.0",),
        "rumqttd 0.20 (Rust) in a wheel, run as a child process; its defaults",
    ),
    Candidate(
        "iotcore 0.4.0, tuned",
        "iotcore-tuned",
        ("iotcore==0.4.0",),
        "max_payload_size 2 MiB, max_inflight_count 1000 (Mosquitto's shipped sizes)",
    ),
    Candidate("cli.embedded_broker", "mamaroom", None, "the broker in cli/embedded_broker.py"),
]


# --- the candidate's process --------------------------------------------------------


def venv_python(candidate: Candidate, log: Path) -> str:
    """The interpreter for the candidate: its own venv, made on first use."""
    if candidate.requirements is None:
        return sys.executable
    slug = "".join(c if c.isalnum() else "-" for c in "-".join(candidate.requirements))
    venv = VENVS / slug
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        with log.open("ab") as out:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *candidate.requirements],
                stdout=out,
                stderr=out,
            )
        if done.returncode != 0:
            text = log.read_text(errors="replace")
            package = re.findall(r"writing (\S+?)\.egg-info/PKG-INFO", text)
            error = re.findall(r"^\s*(\w+Error: .*)$", text, re.M) or re.findall(
                r"^ERROR: (No matching distribution found for .*)$", text, re.M
            )
            if re.search(r"Requires-Python >=3\.1[2-9]", text) and error:
                error[-1] += f" (its newer releases need a newer Python than {machine_python()})"
            raise InstallError(
                (f"{package[-1].rsplit('/', 1)[-1]} fails to build: " if package else "")
                + (error[-1] if error else "pip failed")
            )
        stamp.touch()
    return str(python)


def machine_python() -> str:
    return ".".join(str(x) for x in sys.version_info[:3])


class InstallError(Exception):
    pass


class BrokerProcess:
    def __init__(self, candidate: Candidate, workdir: Path) -> None:
        self.candidate = candidate
        self.workdir = workdir
        self.log = workdir / "broker.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.mosquitto: Mosquitto | None = None

    def start(self) -> None:
        if self.candidate.kind == "mosquitto":
            self.mosquitto = Mosquitto(self.workdir / "mosquitto").start()
            self.port = self.mosquitto.port
            self.proc = self.mosquitto.proc
            return
        python = venv_python(self.candidate, self.workdir / "pip.log")
        out = self.log.open("ab")
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        self.proc = subprocess.Popen(
            [python, str(RUNNER), self.candidate.kind, str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_tail()}")
            if "listening" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"not listening in 60 s: {self.log_tail()}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the broker's process and its children."""
        assert self.proc is not None
        total = 0.0
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(self.proc.pid)
            for q in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = q.cpu_times()
                    total += t.user + t.system
        return total

    def errors_logged(self) -> int:
        if self.candidate.kind == "mosquitto":
            return 0  # its log has no tracebacks to count; see the notice lines instead
        text = self.log.read_text(errors="replace")
        return (
            text.count("Traceback")
            + text.count("Exception in callback")
            + text.count("[error")
            + text.count(" ERROR ")
        )

    def log_tail(self, lines: int = 8) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> tuple[str, float | None]:
        """SIGINT, as Ctrl-C; how it went and the seconds it took (None: killed)."""
        assert self.proc is not None
        try:
            family = [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            family = []
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
            took: float | None = time.monotonic() - t0
            verdict = "exited"
        except subprocess.TimeoutExpired:
            cpu0 = self.cpu_s()
            time.sleep(2)
            busy = (self.cpu_s() - cpu0) / 2 * 100
            verdict = f"still running 15 s after SIGINT at {busy:.0f} % CPU; killed"
            self.proc.kill()
            self.proc.wait()
            took = None
        left = [
            pid
            for pid in family
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        for pid in left:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        if left:
            verdict += f"; {len(left)} child process(es) left behind"
        return verdict, took


# --- the load ---------------------------------------------------------------------

OCCUPANCY_EVERY_S = 2.0
CALL_EVERY_S = 30.0
PRESS_REPEAT_S = 3.0


@dataclass
class Tally:
    published: int = 0  # QoS 1 publishes the broker acknowledged
    publish_failed: int = 0
    disconnects: int = 0
    stray: int = 0  # messages at a node that are not its own cmd
    calls: int = 0
    acked: int = 0
    ack_ms: list[float] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    sent: set[tuple[str, int]] = field(default_factory=set)  # (device, seq) PUBACKed


class Node:
    def __init__(self, device: str, port: int, tally: Tally, rng: random.Random) -> None:
        self.device = device
        self.port = port
        self.tally = tally
        self.rng = rng
        self.seq = 0
        self.connected = asyncio.Event()
        self.load = asyncio.Event()  # set: publish the load
        self.client: aiomqtt.Client | None = None
        self.call: tuple[str, float] | None = None  # open call id, pressed at
        self.commands: list[dict[str, object]] = []
        self.away = asyncio.Event()  # set: stay disconnected

    async def publish(self, kind: str, body: dict[str, object]) -> None:
        client = self.client
        if client is None:
            return
        self.seq += 1
        seq = self.seq
        payload = json.dumps({"v": 1, "boot": 1, "seq": seq, "ts": int(time.time() * 1000), **body})
        try:
            await client.publish(f"mr/v1/dev/{self.device}/{kind}", payload, qos=1, timeout=10)
        except aiomqtt.MqttError:
            self.tally.publish_failed += 1
            return
        self.tally.published += 1
        self.tally.sent.add((self.device, seq))

    async def run(self, stop: asyncio.Event) -> None:
        will = aiomqtt.Will(f"mr/v1/dev/{self.device}/status", b"offline", qos=1, retain=True)
        while not stop.is_set():
            if self.away.is_set():
                await asyncio.sleep(0.05)
                continue
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.device,
                    clean_session=False,
                    will=will,
                    keepalive=30,
                    timeout=10,
                ) as client:
                    await client.subscribe(f"mr/v1/dev/{self.device}/cmd", qos=1)
                    await client.publish(
                        f"mr/v1/dev/{self.device}/status", b"online", qos=1, retain=True
                    )
                    self.client = client
                    self.connected.set()
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._read(client))
                        tasks.create_task(self._behave())
                        tasks.create_task(self._until(stop))
            except* aiomqtt.MqttError:
                if not stop.is_set() and not self.away.is_set():
                    self.tally.disconnects += 1
                    await asyncio.sleep(self.rng.uniform(0.5, 1.5))
            except* _Leave:
                pass
            finally:
                self.client = None
                self.connected.clear()

    async def _until(self, stop: asyncio.Event) -> None:
        await asyncio.wait(
            [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.away.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        raise _Leave

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value != f"mr/v1/dev/{self.device}/cmd":
                self.tally.stray += 1
                continue
            try:
                cmd = json.loads(bytes(message.payload))
            except ValueError:
                self.tally.stray += 1
                continue
            self.commands.append(cmd)
            call = self.call
            if call is not None and cmd.get("call_id") == call[0]:
                self.tally.acked += 1
                self.tally.ack_ms.append((time.monotonic() - call[1]) * 1000)
                self.call = None

    async def _behave(self) -> None:
        next_occupancy = time.monotonic() + self.rng.uniform(0, OCCUPANCY_EVERY_S)
        next_call = time.monotonic() + self.rng.expovariate(1 / CALL_EVERY_S)
        next_press = 0.0
        while True:
            await asyncio.sleep(0.1)
            if not self.load.is_set():
                continue
            now = time.monotonic()
            if now >= next_occupancy:
                next_occupancy = now + OCCUPANCY_EVERY_S
                await self.publish(
                    "occupancy", {"occupied": self.rng.random() < 0.5, "source": "door"}
                )
            if self.call is None and now >= next_call:
                self.call = (f"{self.device}-1-{self.seq + 1}", now)
                self.tally.calls += 1
                next_call = now + self.rng.expovariate(1 / CALL_EVERY_S)
                next_press = now
            if self.call is not None and now >= next_press:
                next_press = now + PRESS_REPEAT_S
                await self.publish("call", {"action": "press", "call_id": self.call[0]})


class _Leave(Exception):
    pass


class Gateway:
    """Counts what reaches `mr/v1/dev/#` (persistent session, as the gateway's)."""

    def __init__(
        self,
        port: int,
        client_id: str = "bench-gateway",
        filters: tuple[str, ...] = ("mr/v1/dev/#",),
    ) -> None:
        self.port = port
        self.client_id = client_id
        self.filters = filters
        self.received: set[tuple[str, int]] = set()
        self.deliveries = 0
        self.status: dict[str, bytes] = {}
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event, *, subscribe: bool = True) -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=self.client_id,
            clean_session=False,
            keepalive=30,
            timeout=10,
        ) as client:
            for pattern in self.filters if subscribe else ():
                await client.subscribe(pattern, qos=1)
            self.ready.set()
            reader = asyncio.create_task(self._read(client))
            await stop.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parts = message.topic.value.split("/")
            if len(parts) != 5:
                continue
            device, kind = parts[3], parts[4]
            if kind == "status":
                self.status[device] = bytes(message.payload)
            elif kind in ("occupancy", "call"):
                body = json.loads(bytes(message.payload))
                self.deliveries += 1
                self.received.add((device, body["seq"]))


def registry_payload() -> bytes:
    """The demo's registry (the 190 rooms of rooms.csv), as the server retains it."""
    from datetime import UTC, datetime

    from mamaroom.config import Settings
    from mamaroom.contract import Registry, dumps
    from mamaroom.registry import read_rooms_csv

    rooms = read_rooms_csv(Settings().rooms_csv)
    return dumps(Registry(version=1, updated_at=datetime.now(UTC), rooms=rooms))


async def server(port: int, stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Retains the registry, then answers each `press` with `call_ack received`,
    as the server does."""
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-server", clean_session=False, keepalive=30, timeout=10
    ) as client:
        await client.subscribe("mr/v1/dev/+/call", qos=1)
        await client.publish("mr/v1/registry", registry_payload(), qos=1, retain=True)
        ready.set()

        async def answer() -> None:
            async for message in client.messages:
                body = json.loads(bytes(message.payload))
                if body.get("action") == "press":
                    device = message.topic.value.split("/")[3]
                    await client.publish(
                        f"mr/v1/dev/{device}/cmd",
                        json.dumps(
                            {"cmd": "call_ack", "call_id": body["call_id"], "status": "received"}
                        ),
                        qos=1,
                        timeout=10,
                    )

        task = asyncio.create_task(answer())
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _connect_packet(client_id: str, will_topic: str, will_payload: bytes) -> bytes:
    """An MQTT 3.1.1 CONNECT with a retained QoS 1 will, clean session."""

    def s(b: bytes) -> bytes:
        return struct.pack("!H", len(b)) + b

    flags = 0x02 | 0x04 | (1 << 3) | 0x20  # clean, will, will QoS 1, will retain
    body = (
        s(b"MQTT")
        + bytes([4, flags])
        + struct.pack("!H", 30)
        + s(client_id.encode())
        + s(will_topic.encode())
        + s(will_payload)
    )
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


async def wait_until(check: Callable[[], object], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


@dataclass
class Result:
    name: str
    note: str
    outcome: str = ""
    connect_s: float | None = None
    connected: int = 0
    published: int = 0
    delivered: int = 0
    calls: int = 0
    acked: int = 0
    ack_p99_ms: float | None = None
    stray: int = 0
    disconnects: int = 0
    broker_errors: int = 0
    cpu_pct: float | None = None
    cpu_us_per_msg: float | None = None
    retained: str = ""
    queued_gateway: str = ""
    queued_nodes: str = ""
    wills: str = ""
    stop: str = ""
    stop_s: float | None = None


async def run_load(broker: BrokerProcess, rooms: int, seconds: float, result: Result) -> None:  # noqa: C901 (a benchmark's script: one scenario, step after step)
    port = broker.port
    tally = Tally()
    stop = asyncio.Event()
    gw_stop = asyncio.Event()
    gateway = Gateway(port)
    server_ready = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    rng = random.Random(1)
    nodes = [
        Node(f"n-bench-{i:04d}", port, tally, random.Random(rng.random())) for i in range(rooms)
    ]
    try:
        background.append(asyncio.create_task(gateway.run(gw_stop)))
        background.append(asyncio.create_task(server(port, stop, server_ready)))
        if not (
            await wait_until(gateway.ready.is_set, 20) and await wait_until(server_ready.is_set, 20)
        ):
            failed = [t.exception() for t in background if t.done() and t.exception()]
            result.outcome = (
                "the server's retained registry "
                f"({len(registry_payload()) // 1000} KB) publish failed: "
                if not server_ready.is_set()
                else "the gateway did not connect: "
            ) + (repr(failed[0]) if failed else "no error")
            return
        t0 = time.monotonic()
        for node in nodes:  # the simulator's ramp: 190 nodes over 3 s
            background.append(asyncio.create_task(node.run(stop)))
            await asyncio.sleep(3.0 / rooms)
        all_up = await wait_until(
            lambda: (
                all(n.connected.is_set() for n in nodes)
                and sum(v == b"online" for v in gateway.status.values()) == rooms
            ),
            60,
        )
        result.connected = sum(n.connected.is_set() for n in nodes)
        if all_up:
            result.connect_s = time.monotonic() - t0
        # The load.
        cpu0, w0 = broker.cpu_s(), time.monotonic()
        for node in nodes:
            node.load.set()
        await asyncio.sleep(seconds)
        for node in nodes:
            node.load.clear()
        await asyncio.sleep(PRESS_REPEAT_S + 1)  # acks of the last presses
        cpu1, w1 = broker.cpu_s(), time.monotonic()
        await wait_until(lambda: tally.sent <= gateway.received, 15)
        result.published = tally.published
        result.delivered = len(tally.sent & gateway.received)
        result.calls, result.acked = tally.calls, tally.acked
        if tally.ack_ms:
            ordered = sorted(tally.ack_ms)
            result.ack_p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        result.cpu_pct = (cpu1 - cpu0) / (w1 - w0) * 100
        # messages through the broker: each publish in, its delivery out, acks
        moved = tally.published + gateway.deliveries + tally.acked * 2
        result.cpu_us_per_msg = (cpu1 - cpu0) / max(moved, 1) * 1e6

        # Retained: a new subscriber gets every node's `online`, and the registry.
        got: dict[str, bytes] = {}
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="bench-retained", clean_session=True, timeout=10
        ) as c:
            await c.subscribe("mr/v1/registry", qos=1)
            await c.subscribe("mr/v1/dev/+/status", qos=1)

            async def collect() -> None:
                async for m in c.messages:
                    if m.retain:
                        got[m.topic.value] = bytes(m.payload)

            task = asyncio.create_task(collect())
            await wait_until(lambda: len(got) >= rooms + 1, 10)
            task.cancel()
        registry = got.get("mr/v1/registry", b"")
        result.retained = f"{sum(v == b'online' for v in got.values())}/{rooms}; registry " + (
            f"{len(registry) // 1000} KB" if registry else "missing"
        )

        # The gateway's persistent session: away while every node publishes once.
        gw_stop.set()
        await background[0]
        before = set(gateway.received)
        marks: list[tuple[str, int]] = []
        for node in nodes:
            await node.publish("occupancy", {"occupied": False, "source": "door"})
            marks.append((node.device, node.seq))
        gw_stop = asyncio.Event()
        gateway.ready.clear()
        background[0] = asyncio.create_task(gateway.run(gw_stop, subscribe=False))
        await wait_until(lambda: all(m in gateway.received for m in marks), 15)
        result.queued_gateway = f"{sum(m in gateway.received for m in marks)}/{len(marks)}"
        del before

        # The nodes' persistent sessions: 10 nodes away while a cmd is sent to each.
        away = nodes[:10]
        for node in away:
            node.away.set()
        await wait_until(lambda: not any(n.connected.is_set() for n in away), 15)
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="bench-cmd", clean_session=True, timeout=10
        ) as c:
            for node in away:
                await c.publish(
                    f"mr/v1/dev/{node.device}/cmd",
                    json.dumps({"cmd": "identify", "nonce": node.device}),
                    qos=1,
                )
        for node in away:
            node.away.clear()

        def heard(n: Node) -> bool:
            return any(c.get("nonce") == n.device for c in n.commands)

        await wait_until(lambda: all(heard(n) for n in away), 15)
        result.queued_nodes = f"{sum(heard(n) for n in away)}/{len(away)}"

        # Last wills: 10 clients whose sockets just close, seen by a new subscriber.
        wills = [f"n-bench-will-{i}" for i in range(10)]
        watcher = Gateway(port, "bench-will-watcher", tuple(f"mr/v1/dev/{d}/status" for d in wills))
        background.append(asyncio.create_task(watcher.run(stop)))
        await wait_until(watcher.ready.is_set, 10)
        socks = []
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(
                _connect_packet(
                    f"n-bench-will-{i}", f"mr/v1/dev/n-bench-will-{i}/status", b"offline"
                )
            )
            with contextlib.suppress(OSError):
                s.recv(4)  # CONNACK
            socks.append(s)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST, no DISCONNECT: the node lost power
        await wait_until(lambda: all(watcher.status.get(d) == b"offline" for d in wills), 15)
        result.wills = f"{sum(watcher.status.get(d) == b'offline' for d in wills)}/10"
    finally:
        stop.set()
        gw_stop.set()
        for task in background:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        result.stray = tally.stray
        result.disconnects = tally.disconnects


def bench_one(candidate: Candidate, rooms: int, seconds: float, workdir: Path) -> Result:
    result = Result(candidate.name, candidate.note)
    workdir.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(candidate, workdir)
    try:
        broker.start()
    except InstallError as exc:
        result.outcome = f"does not install: {exc}"
        return result
    except RuntimeError as exc:
        result.outcome = f"does not start: {exc}"[:300]
        return result
    try:
        asyncio.run(asyncio.wait_for(run_load(broker, rooms, seconds, result), seconds + 300))
    except Exception as exc:  # the figures so far still count
        result.outcome = f"load aborted: {type(exc).__name__}: {exc}"[:300]
    result.broker_errors = broker.errors_logged()
    if broker.mosquitto is not None:
        broker.mosquitto.stop(signal.SIGINT)
        result.stop, result.stop_s = "exited", None
    else:
        result.stop, result.stop_s = broker.stop()
    return result


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def report(results: list[Result], rooms: int, seconds: float) -> str:
    lines = [
        "# Embedded broker candidates",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
        f"`python -m bench.embedded_broker --rooms {rooms} --seconds {seconds:g}`. "
        f"Machine: {machine()}. Each candidate alone on a free port, "
        f"{rooms} nodes ramped in over 3 s, then {seconds:g} s of occupancy every "
        f"{OCCUPANCY_EVERY_S:g} s per node and a call per node every {CALL_EVERY_S:g} s "
        "on average (QoS 1 throughout); see the module's docstring.",
        "",
        "| broker | all connected, s | published | delivered to gateway | calls acked "
        "| ack p99 ms | stray at nodes | disconnects | broker errors | CPU % | CPU µs/msg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.outcome and not r.published:
            lines.append(f"| {r.name} | {r.outcome} |" + " |" * 10)
            continue
        connect = _f(r.connect_s) if r.connect_s is not None else f"{r.connected}/{rooms} in 60 s"
        lines.append(
            f"| {r.name} | {connect} | {r.published:,} | {r.delivered:,} | "
            f"{r.acked}/{r.calls} | {_f(r.ack_p99_ms, '{:.0f}')} | {r.stray:,} | "
            f"{r.disconnects:,} | {r.broker_errors:,} | {_f(r.cpu_pct, '{:.0f}')} | "
            f"{_f(r.cpu_us_per_msg, '{:.0f}')} |"
        )
    lines += [
        "",
        "Not run: mqttools 0.50 (MQTT 5 only, and QoS 0 only, by its README), "
        "hbmqtt 0.9.6 (unmaintained since 2020; amqtt is its fork), gmqtt (a client "
        "only), fp-mqtt-broker 0.1.2 (a wrapper of paho's client, no broker).",
        "",
        "| broker | retained to a new subscriber: `online`s; the registry "
        "| gateway's queued messages "
        "| nodes' queued cmd | last wills | SIGINT with nothing connected | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stop = r.stop + (f" in {r.stop_s:.1f} s" if r.stop_s is not None else "")
        extra = f" {r.outcome}" if r.outcome and r.published else ""
        lines.append(
            f"| {r.name} | {r.retained or '–'} | {r.queued_gateway or '–'} | "
            f"{r.queued_nodes or '–'} | {r.wills or '–'} | {stop or '–'} | "
            f"{r.note}{extra} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.embedded_broker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rooms", type=int, default=190)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--only", nargs="*", help="candidates whose name contains one of these")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    chosen = [
        c
        for c in CANDIDATES
        if not args.only or any(o.lower() in c.name.lower() for o in args.only)
    ]
    if (
        any(c.kind == "mosquitto" for c in chosen)
        and not shutil.which("mosquitto")
        and not os.path.exists("/usr/sbin/mosquitto")
    ):
        chosen = [c for c in chosen if c.kind != "mosquitto"]
    out = PROJECT_ROOT / "var" / "bench-embedded-broker"
    results = []
    for candidate in chosen:
        print(f"==> {candidate.name}", flush=True)
        workdir = out / "".join(ch if ch.isalnum() else "-" for ch in candidate.name)
        shutil.rmtree(workdir, ignore_errors=True)
        result = bench_one(candidate, args.rooms, args.seconds, workdir)
        print(f"    {result}", flush=True)
        results.append(result)
    text = report(results, args.rooms, args.seconds)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
        print(f"written to {RESULTS}")
    return text


if __name__ == "__main__":
    main()
