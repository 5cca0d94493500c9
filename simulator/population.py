"""A population of simulated nodes: the demo's rooms and the benchmarks' load."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from zoneinfo import ZoneInfo

from mamaroom.config import Settings
from mamaroom.logs import get_logger
from mamaroom.registry import read_rooms_csv
from simulator.node import Behaviour, SimNode

log = get_logger(__name__)


def next_boots(path: Path, devices: list[str]) -> dict[str, int]:
    """Each device's boot counter, persisted like a node's flash counter."""
    try:
        boots: dict[str, int] = json.loads(path.read_text())
    except (OSError, ValueError):
        boots = {}
    for device in devices:
        boots[device] = boots.get(device, 0) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(boots))
    return boots


def pick_devices(settings: Settings, count: int) -> list[str]:
    rooms = read_rooms_csv(settings.rooms_csv)
    devices = [r.device for r in rooms if r.device]
    if count > len(devices):
        raise ValueError(f"{settings.rooms_csv} has only {len(devices)} rooms with a device")
    return devices[:count]


async def run_population(
    settings: Settings,
    devices: list[str],
    *,
    speed: float = 1.0,
    keepalive_s: int = 30,
    seed: int | None = None,
    ramp_s: float = 3.0,
    call_every_h: float = 0.0,
) -> None:
    rng = random.Random(seed)
    boots = next_boots(settings.data_dir / "simulator" / "boots.json", devices)
    tz = ZoneInfo(settings.timezone)
    nodes = [
        SimNode(
            d,
            boots[d],
            settings.mqtt,
            Behaviour(
                speed=speed, tz=tz, rng=random.Random(rng.random()), call_every_h=call_every_h
            ),
            keepalive_s=keepalive_s,
        )
        for d in devices
    ]
    log.info("simulation starting", nodes=len(nodes), broker=settings.mqtt.url, speed=speed)
    async with asyncio.TaskGroup() as tasks:
        for i, node in enumerate(nodes):
            tasks.create_task(node.run())
            # Spread connects out, as real nodes powering up never arrive at once.
            if ramp_s and i + 1 < len(nodes):
                await asyncio.sleep(ramp_s / len(nodes))
        await asyncio.wait_for(asyncio.gather(*(n.connected.wait() for n in nodes)), None)
        log.info("simulation running", nodes=len(nodes), connected=len(nodes))
