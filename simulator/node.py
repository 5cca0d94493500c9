"""One simulated room node, speaking the contract like the firmware does.

Its own MQTT connection (client id = device id, persistent session, retained
birth `online` and last will `offline`), a boot counter, a strictly increasing
`seq`, door-lock sessions of realistic length, occupancy on every change and
every 5 minutes, telemetry every 60 seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt

from mamaroom.config import MqttSettings
from mamaroom.contract import PRESS_REPEAT_MS, CallStatus, Kind, device_topic
from mamaroom.logs import get_logger
from mamaroom.mqtt_socket import NO_DELAY

log = get_logger(__name__)

OCCUPANCY_REFRESH_S = 300
PRESS_REPEAT_S = PRESS_REPEAT_MS / 1000
TELEMETRY_S = 60
FW_VERSION = "sim-1.0.0"


def _hour_weight(hour: int) -> float:
    """How busy nursing rooms are by hour: mid-morning, lunch and mid-afternoon
    peaks in working hours, nearly empty at night."""
    peaks = {9: 0.6, 10: 1.0, 11: 0.9, 12: 1.2, 13: 1.0, 14: 0.8, 15: 0.9, 16: 0.7, 17: 0.4}
    return peaks.get(hour, 0.25 if 8 <= hour <= 19 else 0.03)


@dataclass
class CallState:
    id: str
    #: The last status the server sent; None until `received`.
    status: str | None = None
    #: The staff key's latest word in the room (`presence`, `reset`), repeated until
    #: the server's status catches up, as the firmware does (docs/protocol.md).
    local: str | None = None


#: The status that ends the repeats of each staff-key action, and what comes after it.
_UNTIL = {"presence": (CallStatus.ARRIVED, CallStatus.RESOLVED), "reset": (CallStatus.RESOLVED,)}


@dataclass
class Behaviour:
    """Timing of a room's use; `speed` > 1 compresses sessions and gaps (demo)."""

    speed: float = 1.0
    #: Mean hours between emergency calls per room (0 = never), in simulated time.
    call_every_h: float = 0.0
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    rng: random.Random = field(default_factory=random.Random)

    def session_s(self) -> float:
        # Pumping or feeding: mostly 15-40 min, median about 25.
        minutes = min(max(self.rng.lognormvariate(math.log(25), 0.3), 8), 60)
        return minutes * 60 / self.speed

    def gap_s(self) -> float:
        weight = _hour_weight(datetime.now(self.tz).hour)
        mean_min = 50 / max(weight, 0.01)
        return self.rng.expovariate(1 / mean_min) * 60 / self.speed


class SimNode:
    def __init__(
        self,
        device: str,
        boot: int,
        mqtt: MqttSettings,
        behaviour: Behaviour,
        *,
        keepalive_s: int = 30,
    ) -> None:
        self.device = device
        self.boot = boot
        self.seq = 0
        self.mqtt = mqtt
        self.behaviour = behaviour
        self.keepalive_s = keepalive_s
        self.occupied = behaviour.rng.random() < 0.25
        self.occupied_since = time.monotonic()
        self.started = time.monotonic()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.published = 0
        #: The open emergency call, kept across reconnects (firmware keeps it in flash).
        self.call: CallState | None = None
        self._background: set[asyncio.Future[None]] = set()

    def _envelope(self) -> dict[str, Any]:
        self.seq += 1
        return {"v": 1, "boot": self.boot, "seq": self.seq, "ts": int(time.time() * 1000)}

    async def _send(self, kind: Kind, body: dict[str, Any]) -> None:
        client = self._client
        if client is None:
            return  # offline: the current state is re-sent on reconnect
        payload = json.dumps({**self._envelope(), **body}, separators=(",", ":"))
        try:
            await client.publish(device_topic(self.device, kind), payload, qos=1)
            self.published += 1
        except aiomqtt.MqttError:
            pass  # the connection loop notices and reconnects

    async def send_occupancy(self) -> None:
        still = int(time.monotonic() - self.occupied_since) if self.occupied else 0
        await self._send(
            Kind.OCCUPANCY,
            {
                "occupied": self.occupied,
                "source": "door",
                "radar": "still" if self.occupied else "none",
                "still_s": still,
            },
        )

    async def send_telemetry(self) -> None:
        rng = self.behaviour.rng
        await self._send(
            Kind.TELEMETRY,
            {
                "uptime_s": int(time.monotonic() - self.started),
                "rssi": rng.randint(-78, -48),
                "heap_free": rng.randint(78_000, 96_000),
                "fw": FW_VERSION,
                "reset_reason": "power_on",
            },
        )

    async def run(self) -> None:
        """Stay connected forever (reconnect with backoff); behave while connected."""
        delay = 1.0
        will = aiomqtt.Will(device_topic(self.device, Kind.STATUS), b"offline", qos=1, retain=True)
        while True:
            try:
                async with aiomqtt.Client(
                    self.mqtt.host,
                    self.mqtt.port,
                    identifier=self.device,
                    username=self.mqtt.username,
                    password=self.mqtt.password,
                    keepalive=self.keepalive_s,
                    clean_session=False,
                    will=will,
                    socket_options=[NO_DELAY],
                ) as client:
                    self._client = client
                    await client.subscribe(device_topic(self.device, Kind.CMD), qos=1)
                    await client.publish(
                        device_topic(self.device, Kind.STATUS), b"online", qos=1, retain=True
                    )
                    self.connected.set()
                    delay = 1.0
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._behave())
                        tasks.create_task(self._every(OCCUPANCY_REFRESH_S, self.send_occupancy))
                        tasks.create_task(self._every(TELEMETRY_S, self.send_telemetry))
                        tasks.create_task(self._commands(client))
                        tasks.create_task(self._calls())
                        tasks.create_task(self._press_until_received())
            except* aiomqtt.MqttError as group:
                log.debug(
                    "simulated node disconnected",
                    device=self.device,
                    error=str(group.exceptions[0]),
                )
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)

    async def _every(self, period_s: float, action: Any) -> None:
        # Start at a random phase so 190 nodes do not report in lock-step.
        await asyncio.sleep(self.behaviour.rng.uniform(0, period_s))
        while True:
            await action()
            await asyncio.sleep(period_s)

    async def _behave(self) -> None:
        await self.send_occupancy()  # announce the current state on (re)connect
        while True:
            remaining = self.behaviour.session_s() if self.occupied else self.behaviour.gap_s()
            await asyncio.sleep(remaining)
            self.occupied = not self.occupied
            self.occupied_since = time.monotonic()
            await self.send_occupancy()

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                cmd = json.loads(bytes(message.payload))
            except ValueError:
                log.warning("malformed command ignored", device=self.device)
                continue
            if isinstance(cmd, dict) and cmd.get("cmd") == "call_ack":
                await self._call_status(str(cmd.get("call_id")), str(cmd.get("status")))

    # --- emergency calls -----------------------------------------------------------

    async def _calls(self) -> None:
        """Now and then a mother presses the button (rate: `call_every_h` per room)."""
        while self.behaviour.call_every_h > 0:
            await asyncio.sleep(
                self.behaviour.rng.expovariate(
                    1 / (self.behaviour.call_every_h * 3600 / self.behaviour.speed)
                )
            )
            if self.call is None:
                self.call = CallState(f"{self.device}-{self.boot}-{self.seq + 1}")
                log.info("simulated emergency call", device=self.device, call_id=self.call.id)

    async def _press_until_received(self) -> None:
        """The contract's end-to-end acknowledgement: re-publish `press` every 3 s
        (same call_id, new seq) until `received` or later arrives; `presence` and
        `reset` likewise until `arrived` and `resolved`."""
        while True:
            call = self.call
            if call is not None and call.status is None:
                await self._send(Kind.CALL, {"action": "press", "call_id": call.id})
            elif call is not None and call.local and call.status not in _UNTIL[call.local]:
                await self._send(Kind.CALL, {"action": call.local, "call_id": call.id})
            await asyncio.sleep(PRESS_REPEAT_S)

    async def _call_status(self, call_id: str, status: str) -> None:
        call = self.call
        if call is None or call.id != call_id or status == call.status:
            return
        call.status = status
        await self._send(Kind.CALL, {"action": "shown", "call_id": call_id, "status": status})
        if status == CallStatus.ACKNOWLEDGED:  # staff walk over, then reset the call in the room
            walk = self.behaviour.rng.uniform(60, 240) / self.behaviour.speed
            asyncio.get_running_loop().call_later(walk, self._spawn, "presence", call_id)
            stay = walk + self.behaviour.rng.uniform(120, 600) / self.behaviour.speed
            asyncio.get_running_loop().call_later(stay, self._spawn, "reset", call_id)
        elif status == CallStatus.RESOLVED:
            self.call = None

    def _spawn(self, action: str, call_id: str) -> None:
        if self.call is not None and self.call.id == call_id:
            self.call.local = action  # repeated by _press_until_received until it lands
        task = asyncio.ensure_future(self._send(Kind.CALL, {"action": action, "call_id": call_id}))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
