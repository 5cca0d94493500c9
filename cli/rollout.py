"""An over-the-air rollout, one room at a time (`mamaroom device ota`).

For each node: its retained `status` must say online; the `ota` command goes
to its `cmd` topic (QoS 1); then its telemetry tells the outcome. A node
that refuses says why at once (`ota` field); one that takes the update
restarts: its birth `online` comes again live (not the retained copy), and
its first telemetry after that (uptime shorter than the time since the
command) reports the firmware it runs: the new version (updated and
confirmed: a node confirms an update when it gets online, before it sends
telemetry) or the old one (rolled back by the node itself).
The rollout stops at the first node that does not end on the new version:
190 rooms are not all bricked by one bad release.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import aiomqtt
import httpx

from mamaroom.config import MqttSettings
from mamaroom.contract import (
    REGISTRY_TOPIC,
    Kind,
    OtaCommand,
    Registry,
    RegistryRoom,
    device_topic,
    dumps,
    parse_status,
)
from mamaroom.firmware_bundle import BundleError, read_bundle
from mamaroom.mqtt_socket import NO_DELAY


class Outcome(StrEnum):
    UPDATED = "updated"
    ALREADY = "already on it"
    REFUSED = "refused"
    ROLLED_BACK = "rolled back"
    OFFLINE = "offline"
    TIMEOUT = "no answer"

    @property
    def ok(self) -> bool:
        return self in (Outcome.UPDATED, Outcome.ALREADY)


@dataclass(frozen=True)
class Target:
    room: str
    device: str


@dataclass(frozen=True)
class Result:
    target: Target
    outcome: Outcome
    detail: str
    seconds: float


class RolloutError(Exception):
    """The rollout cannot start (bundle not served, broker away, no such room)."""


def offered_bundle(server_url: str, version: str, timeout_s: float = 30) -> OtaCommand:
    """The command for `version`, from the bundle as the server serves it:
    downloaded as a node will download it, checked, and its hash compared with
    the one the server publishes."""
    url = f"{server_url.rstrip('/')}/api/firmware/{version}.bundle"
    try:
        data = httpx.get(url, timeout=timeout_s).raise_for_status().content
        published = (
            httpx.get(url.removesuffix(".bundle") + ".sha256", timeout=timeout_s)
            .raise_for_status()
            .text.split()[0]
        )
    except (httpx.HTTPError, IndexError) as exc:
        raise RolloutError(f"{url}: {exc}") from None
    try:
        bundle = read_bundle(data)
    except (BundleError, ValueError, KeyError, TypeError) as exc:
        raise RolloutError(f"{url}: not a good bundle: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if bundle.version != version or digest != published:
        raise RolloutError(
            f"{url}: bundle {bundle.version} sha256 {digest[:12]}... does not "
            f"match {version} {published[:12]}..."
        )
    return OtaCommand(url=url, sha256=digest, version=version, size=len(data))


def pick(
    rooms: list[RegistryRoom], room_ids: list[str], building: str | None, devices: list[str]
) -> tuple[list[Target], list[str]]:
    """The nodes to update, in registry order; and what was asked for but has no node."""
    missing: list[str] = []
    if room_ids or devices:
        by_room = {r.id: r for r in rooms}
        by_device = {r.device: r for r in rooms if r.device}
        chosen: list[RegistryRoom] = []
        for rid in room_ids:
            room = by_room.get(rid)
            if room is None or not room.device:
                missing.append(rid)
            else:
                chosen.append(room)
        for dev in devices:
            room = by_device.get(dev)
            chosen.append(
                room
                if room
                else RegistryRoom(id="-", name="-", name_en="-", building="-", floor=0, device=dev)
            )
        targets = [Target(r.id, r.device) for r in chosen if r.device]
    else:
        targets = [
            Target(r.id, r.device)
            for r in rooms
            if r.device and (building is None or building in (r.building, r.building_en))
        ]
        if not targets:
            missing.append(building or "(all rooms)")
    seen: set[str] = set()
    unique = []
    for t in targets:
        if t.device not in seen:
            seen.add(t.device)
            unique.append(t)
    return unique, missing


def _client(settings: MqttSettings) -> aiomqtt.Client:
    return aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=f"mamaroom-ota-{uuid.uuid4().hex[:8]}",
        username=settings.username,
        password=settings.password,
        keepalive=settings.keepalive_s,
        clean_session=True,
        tls_params=aiomqtt.TLSParameters() if settings.tls else None,
        socket_options=[NO_DELAY],
    )


async def registry_rooms(settings: MqttSettings, wait_s: float = 5) -> list[RegistryRoom] | None:
    """The rooms as the server publishes them (retained), or None if it has not."""
    try:
        async with _client(settings) as client:
            await client.subscribe(REGISTRY_TOPIC, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    async for message in client.messages:
                        return Registry.model_validate_json(bytes(message.payload)).rooms
    except aiomqtt.MqttError as exc:
        raise RolloutError(f"broker {settings.url}: {exc}") from None
    return None


Progress = Callable[[Target, str], None]


async def rollout(
    settings: MqttSettings,
    cmd: OtaCommand,
    targets: list[Target],
    timeout_s: float,
    progress: Progress,
    done: Callable[[Result], None],
) -> list[Result]:
    """Update the targets one after the other; stop at the first that fails."""
    results: list[Result] = []
    try:
        async with _client(settings) as client:
            for target in targets:
                t0 = time.monotonic()
                outcome, detail = await update_one(client, target, cmd, timeout_s, progress)
                result = Result(target, outcome, detail, time.monotonic() - t0)
                results.append(result)
                done(result)
                if not outcome.ok:
                    break
    except aiomqtt.MqttError as exc:
        raise RolloutError(f"broker {settings.url}: {exc}") from None
    return results


async def update_one(
    client: aiomqtt.Client,
    target: Target,
    cmd: OtaCommand,
    timeout_s: float,
    progress: Progress,
    status_wait_s: float = 10,
) -> tuple[Outcome, str]:
    dev = target.device
    status_topic, telemetry_topic = (
        device_topic(dev, Kind.STATUS),
        device_topic(dev, Kind.TELEMETRY),
    )
    await client.subscribe(status_topic, qos=1)
    await client.subscribe(telemetry_topic, qos=1)
    try:
        progress(target, "checking it is online")
        status = await _first_status(client, status_topic, status_wait_s)
        if status != "online":
            return Outcome.OFFLINE, f"status {status or 'never seen'}: not updated"
        await client.publish(device_topic(dev, Kind.CMD), dumps(cmd), qos=1)
        sent = time.monotonic()
        reborn = False  # connected again since the command
        progress(target, "command sent; downloading and verifying")
        try:
            async with asyncio.timeout(timeout_s):
                async for message in client.messages:
                    topic = str(message.topic)
                    if topic == status_topic:
                        with contextlib.suppress(ValueError):
                            state = parse_status(bytes(message.payload))
                            # A live birth, not the retained copy: a new connection.
                            reborn |= state == "online" and not message.retain
                            progress(
                                target,
                                "restarting"
                                if state == "offline"
                                else "back online; waiting for its telemetry",
                            )
                        continue
                    if topic != telemetry_topic:
                        continue
                    try:
                        t = json.loads(message.payload)
                    except ValueError:
                        continue
                    verdict = judge(t, cmd.version, time.monotonic() - sent, reborn=reborn)
                    if verdict is not None:
                        return verdict
        except TimeoutError:
            return Outcome.TIMEOUT, f"no outcome within {timeout_s:.0f} s"
        return Outcome.TIMEOUT, "the broker connection ended"
    finally:
        await client.unsubscribe(status_topic)
        await client.unsubscribe(telemetry_topic)


def judge(
    t: dict[str, object], version: str, since_s: float, *, reborn: bool
) -> tuple[Outcome, str] | None:
    """What one telemetry message says about the update (`since_s` after the
    command; `reborn`: the node connected again since); None: nothing yet."""
    fw, note, uptime = t.get("fw"), t.get("ota"), t.get("uptime_s")
    restarted = reborn and isinstance(uptime, int) and uptime <= since_s + 1
    if restarted:
        if fw == version:
            return Outcome.UPDATED, f"running {version} (reset: {t.get('reset_reason')})"
        return Outcome.ROLLED_BACK, f"back on {fw} (reset: {t.get('reset_reason')})"
    if isinstance(note, str) and note.startswith(f"refused {version}: "):
        why = note.removeprefix(f"refused {version}: ")
        if why == f"already on {version}":
            return Outcome.ALREADY, f"running {version}"
        return Outcome.REFUSED, why
    return None


async def _first_status(client: aiomqtt.Client, topic: str, wait_s: float) -> str | None:
    """The node's retained status (sent on subscribing), if it has one."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            async for message in client.messages:
                if str(message.topic) == topic:
                    try:
                        return parse_status(bytes(message.payload))
                    except ValueError:
                        return None
    return None
