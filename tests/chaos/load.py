"""The chaos test's load: many simulated room nodes in one asyncio process.

Each node speaks the contract like simulator/node.py (its own MQTT connection,
client id = device id, persistent session, retained birth and last will, a
`seq` up by one per message) and keeps a ledger the test reads while it runs:
one JSON line per message the broker acknowledged (PUBACK), per call started
and per `call_ack` received, each with the wall time.

A message is given its `seq` when the node makes it and waits in the node's
outbox until the broker acknowledges it; after a lost connection it is sent
again, same `seq` (the gateway deduplicates). So every message of the ledger
reached the broker at least once, and what storage lacks of it was lost on
the far side.

Calls follow the contract: `press` every 3 s until `received` or a later
status; then, as a staff member would, `presence` and `reset` in the room,
each repeated every 3 s until the server answers `arrived` / `resolved`.
`kill -USR1` starts a burst of calls at once (so a fault can land while
calls are unacknowledged); `kill -TERM` stops: the outboxes are flushed, the
ledger gets `stopped`, and the nodes disconnect cleanly.

    python -m tests.chaos.load --port 1883 --ledger ledger.jsonl --nodes 100 --calls 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from mamaroom.contract import Kind, device_topic
from mamaroom.mqtt_socket import NO_DELAY

PRESS_REPEAT_S = 3.0
TELEMETRY_S = 60.0


async def until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)


class Ledger:
    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(self, ev: str, **fields: Any) -> None:
        # One line per event, flushed, so the test can follow it live.
        self._file.write(
            json.dumps({"t": time.time(), "ev": ev, **fields}, separators=(",", ":")) + "\n"
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Node:
    def __init__(self, load: Load, device: str, boot: int, rng: random.Random) -> None:
        self.load = load
        self.device = device
        self.boot = boot
        self.rng = rng
        self.seq = 0
        self.occupied = rng.random() < 0.3
        self.outbox: deque[tuple[Kind, dict[str, Any]]] = deque()
        self.wake = asyncio.Event()
        self.connected = False
        #: The current call and the last status heard for it.
        self.call: str | None = None
        self.status: str | None = None
        self.calls = 0
        self.started = time.monotonic()

    # --- making messages (whether connected or not) -------------------------------

    def enqueue(self, kind: Kind, **body: Any) -> None:
        self.seq += 1
        self.outbox.append(
            (
                kind,
                {"v": 1, "boot": self.boot, "seq": self.seq, "ts": int(time.time() * 1000), **body},
            )
        )
        self.wake.set()

    def occupancy(self) -> None:
        self.enqueue(
            Kind.OCCUPANCY,
            occupied=self.occupied,
            source="door",
            radar="moving" if self.occupied else "none",
        )

    async def behave(self) -> None:
        self.occupancy()
        while not self.load.stopping:
            await asyncio.sleep(self.rng.expovariate(1 / self.load.args.change_every_s))
            self.occupied = not self.occupied
            self.occupancy()

    async def refresh(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.load.args.refresh_s))
        while not self.load.stopping:
            self.occupancy()
            await asyncio.sleep(self.load.args.refresh_s)

    async def telemetry(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, TELEMETRY_S))
        while not self.load.stopping:
            self.enqueue(
                Kind.TELEMETRY,
                uptime_s=int(time.monotonic() - self.started),
                rssi=self.rng.randint(-75, -50),
                heap_free=self.rng.randint(80_000, 95_000),
                fw="chaos-load",
            )
            await asyncio.sleep(TELEMETRY_S)

    # --- calls -----------------------------------------------------------------------

    def start_call(self) -> None:
        self.calls += 1
        self.call = f"{self.device}-{self.boot}-c{self.calls}"
        self.status = None
        self.load.ledger.write("call", dev=self.device, call=self.call)
        self.load.open_calls.add(self.call)
        call = self.call
        self.load.spawn(self.press_until_received(call))

    async def press_until_received(self, call: str) -> None:
        while self.call == call and self.status is None:
            self.enqueue(Kind.CALL, action="press", call_id=call)
            await asyncio.sleep(PRESS_REPEAT_S)

    async def on_call_ack(self, call: str, status: str) -> None:
        self.load.ledger.write("ack", dev=self.device, call=call, status=status)
        if call != self.call or status == self.status:
            return
        first = self.status is None
        self.status = status
        self.enqueue(Kind.CALL, action="shown", call_id=call, status=status)
        if first:
            self.load.received(call)
            # Staff come in (staff key once), then reset the call in the room;
            # each repeated, as the firmware does, until the matching status.
            await asyncio.sleep(self.rng.uniform(1, 3))
            await self.repeat_until(call, "presence", {"arrived", "resolved"})
            await asyncio.sleep(self.rng.uniform(1, 3))
            await self.repeat_until(call, "reset", {"resolved"})
            self.load.finished(call)
            await asyncio.sleep(self.rng.uniform(0.5, 1))
            if self.call == call:
                self.call = None  # free for the next call

    async def repeat_until(self, call: str, action: str, statuses: set[str]) -> None:
        while self.call == call and self.status not in statuses and not self.load.stopping:
            self.enqueue(Kind.CALL, action=action, call_id=call)
            await asyncio.sleep(PRESS_REPEAT_S)

    # --- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        args = self.load.args
        will = aiomqtt.Will(device_topic(self.device, Kind.STATUS), b"offline", qos=1, retain=True)
        delay = 0.5
        while not self.load.closed:
            try:
                async with aiomqtt.Client(
                    args.host,
                    args.port,
                    identifier=self.device,
                    keepalive=30,
                    clean_session=False,
                    will=will,
                    socket_options=[NO_DELAY],
                    timeout=10,
                ) as client:
                    await client.subscribe(device_topic(self.device, Kind.CMD), qos=1)
                    await client.publish(
                        device_topic(self.device, Kind.STATUS), b"online", qos=1, retain=True
                    )
                    self.connected = True
                    self.load.ledger.write("conn", dev=self.device)
                    delay = 0.5
                    sender = asyncio.ensure_future(self.sender(client))
                    commands = asyncio.ensure_future(self.commands(client))
                    done, pending = await asyncio.wait(
                        {sender, commands}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    for task in done:
                        task.result()  # a lost connection raises MqttError: reconnect
                    return  # the sender returned: closed, disconnect cleanly
            except aiomqtt.MqttError:
                pass
            finally:
                if self.connected:
                    self.load.ledger.write("disc", dev=self.device)
                self.connected = False
            await asyncio.sleep(delay * random.uniform(0.7, 1.3))
            delay = min(delay * 2, 5.0)

    async def sender(self, client: aiomqtt.Client) -> None:
        while True:
            while not self.outbox:
                if self.load.closed:
                    return
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1)
            kind, body = self.outbox[0]
            await client.publish(
                device_topic(self.device, kind), json.dumps(body, separators=(",", ":")), qos=1
            )
            self.outbox.popleft()  # PUBACKed: only now is it in the ledger
            extra = {k: body[k] for k in ("occupied", "action", "call_id", "status") if k in body}
            self.load.ledger.write(
                "pub", dev=self.device, boot=self.boot, seq=body["seq"], kind=kind.value, **extra
            )

    async def commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                cmd = json.loads(bytes(message.payload))
            except ValueError:
                continue
            if isinstance(cmd, dict) and cmd.get("cmd") == "call_ack":
                self.load.spawn(self.on_call_ack(str(cmd.get("call_id")), str(cmd.get("status"))))


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ledger = Ledger(Path(args.ledger))
        rng = random.Random(args.seed)
        boot = rng.randint(1, 1_000_000)
        self.nodes = [
            Node(self, f"{args.prefix}{i:03d}", boot + i, random.Random(rng.random()))
            for i in range(args.nodes)
        ]
        self.rng = rng
        self.started_calls = 0
        self.open_calls: set[str] = set()
        self.stopping = False
        self.closed = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._burst = asyncio.Event()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def received(self, call: str) -> None:
        """`received` came: the call is safe (the ledger has the time)."""

    def finished(self, call: str) -> None:
        """`resolved` came after the node's reset: the call is over."""
        self.open_calls.discard(call)
        if self.started_calls >= self.args.calls and not self.open_calls:
            self.ledger.write("calls_done", calls=self.started_calls)

    def _start_calls(self, n: int, cap: int) -> int:
        idle = [node for node in self.nodes if node.call is None and node.connected]
        self.rng.shuffle(idle)
        n = max(min(n, len(idle), cap - self.started_calls), 0)
        for node in idle[:n]:
            self.started_calls += 1
            node.start_call()
        return n

    async def calls(self) -> None:
        """`calls` calls spread over `duration_s`, plus bursts on SIGUSR1. The
        bursts' calls are held back from the schedule until `bursts` of them
        came, so a late fault still finds calls to make."""
        period = self.args.duration_s / self.args.calls
        owed = 0.0
        bursts = 0
        while self.started_calls < self.args.calls and not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._burst.wait(), period)
            if self._burst.is_set():
                self._burst.clear()
                bursts += 1
                # Every node may be busy with a call: wait for some to be free.
                n = 0
                for _ in range(100):
                    n = self._start_calls(self.args.burst, self.args.calls)
                    if n or self.started_calls >= self.args.calls:
                        break
                    await asyncio.sleep(0.1)
                self.ledger.write("burst", calls=n)
                continue
            reserve = max(self.args.bursts - bursts, 0) * self.args.burst
            # Calls owed while nodes were away are not all made at once afterwards.
            owed = min(owed + 1, 5.0)
            owed -= self._start_calls(int(owed), self.args.calls - reserve)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._burst.set)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        self.ledger.write("start", nodes=len(self.nodes), calls=self.args.calls)
        for node in self.nodes:
            self.spawn(node.run())
        await until(lambda: all(n.connected for n in self.nodes), 600)
        self.ledger.write("connected")
        for node in self.nodes:
            self.spawn(node.behave())
            self.spawn(node.refresh())
            self.spawn(node.telemetry())
        self.spawn(self.calls())
        await stop.wait()
        self.stopping = True
        await until(lambda: not any(n.outbox for n in self.nodes), 60)
        unsent = sum(len(n.outbox) for n in self.nodes)
        self.closed = True
        for node in self.nodes:
            node.wake.set()
        await until(lambda: not any(n.connected for n in self.nodes), 15)
        self.ledger.write("stopped", unsent=unsent, calls=self.started_calls)
        self.ledger.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--ledger", required=True)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--prefix", default="chaos-")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument(
        "--duration-s", type=float, default=240.0, help="spread the calls over this long"
    )
    p.add_argument("--burst", type=int, default=20, help="calls started by one SIGUSR1")
    p.add_argument(
        "--bursts",
        type=int,
        default=4,
        help="bursts to expect: their calls are kept out of the schedule",
    )
    p.add_argument(
        "--refresh-s",
        type=float,
        default=10.0,
        help="occupancy refresh interval (the contract's is 5 min)",
    )
    p.add_argument(
        "--change-every-s",
        type=float,
        default=90.0,
        help="mean time between occupancy changes per room",
    )
    p.add_argument("--seed", type=int, default=None)
    asyncio.run(Load(p.parse_args()).run())


if __name__ == "__main__":
    main()
