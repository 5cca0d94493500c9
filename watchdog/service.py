"""The dead-man's switch: `mamaroom watchdog`.

A small process of its own, sharing nothing with the server but the paging
channel code: it pages the security desk (ESPA and IM) when

- a gateway stops: its status `mr/v1/gateway/{id}/status` turns `offline`
  (published by the gateway itself on a clean stop, or by the broker as its
  last will when it dies; paged at once, not after the silence), or its
  heartbeat (the stats it publishes every 10 s) stops;
- the server stops answering, or answers that it is not ready (`/readyz`:
  no broker link or no storage, so calls are not handled) while the broker
  works;
- the broker stops answering: a message the watchdog publishes to itself
  does not come back (a hung broker keeps TCP open; only a round trip tells);

and pages again when each is back ("RESTORED"). Nobody assumes silence means
calm. Retained messages are old news: only live ones count as heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.config import Settings
from mamaroom.contract import (
    GATEWAY_SUBSCRIPTION,
    GatewayTopicKind,
    parse_gateway_topic,
    watchdog_ping_topic,
)
from mamaroom.logs import get_logger
from paging.channel import Channel

log = get_logger(__name__)
BROKER = "broker"
SERVER = "server"
#: After the broker is back (and at start), how long a server that is alive
#: but not ready is given to reconnect (its back-off reaches ~40 s).
RECONNECT_GRACE_S = 60.0


def gateway_check(client_id: str) -> str:
    return f"gateway {client_id}"


@dataclass
class Check:
    name: str
    silence_s: float
    #: What is at stake, said in the page.
    meaning: str
    last_ok: float
    down: bool = False
    last_paged: float = 0.0
    #: Why it is down ("last will", "no heartbeat for 60 s").
    reason: str = ""
    #: A first sign of life has come (logged once).
    seen: bool = False


class Watchdog:
    """The decisions, with an injected clock; the process feeds it events."""

    def __init__(
        self,
        settings: Settings,
        *,
        send: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cfg = settings.watchdog
        self._send = send
        self._clock = clock
        self._repeat_s = cfg.repeat_s
        self._lock = threading.Lock()  # events come from paho's thread too
        now = clock()
        self._broker_back_at = now
        self.server_why = ""
        gateways = cfg.gateways or [settings.gateway.client_id]
        self.checks: dict[str, Check] = {
            BROKER: Check(
                BROKER, cfg.broker_silence_s, "MQTT broker not answering: no call can arrive", now
            ),
            SERVER: Check(
                SERVER,
                cfg.server_silence_s,
                "server not answering or not ready: calls are not paged",
                now,
            ),
        }
        for gw in gateways:
            name = gateway_check(gw)
            self.checks[name] = Check(
                name, cfg.gateway_silence_s, f"gateway {gw} stopped: room states stale", now
            )

    def alive(self, name: str) -> None:
        """A sign of life from `name`."""
        with self._lock:
            check = self.checks.get(name)
            if check is None:
                return
            now = self._clock()
            check.last_ok = now
            if not check.seen:
                check.seen = True
                log.info("watchdog: alive", check=name)
            if check.down:
                check.down = False
                if name == BROKER:
                    self._broker_back_at = now
                    # Gateway heartbeats could not arrive while the broker was
                    # away: give each a full silence period from now.
                    for other in self._gateways():
                        if not other.down:
                            other.last_ok = now
                self._page(f"MAMAROOM RESTORED: {name}")
                log.info("watchdog: restored", check=name)

    def server_answered(self, *, ready: bool, live: bool, why: str = "") -> None:
        """The server's /readyz (`ready`) and /healthz (`live`). Ready is a
        sign of life. Live but not ready (no broker link, storage failing)
        counts only while the broker is down or just back: then the server
        cannot be ready, and that page has gone out already. Otherwise a
        server that runs but cannot take calls is paged like a dead one."""
        with self._lock:
            broker_down = self.checks[BROKER].down
            recovering = self._clock() - self._broker_back_at < RECONNECT_GRACE_S
            #: What /readyz said is wrong (e.g. a full disk), for the page.
            self.server_why = why
        if ready or (live and (broker_down or recovering)):
            self.alive(SERVER)

    def dead(self, name: str, reason: str) -> None:
        """`name` said it is gone (a gateway's last will)."""
        with self._lock:
            check = self.checks.get(name)
            if check is not None and not check.down:
                self._down(check, reason)

    def evaluate(self) -> None:
        """Declare down whatever has been silent too long; repeat pages."""
        with self._lock:
            now = self._clock()
            broker_down = self.checks[BROKER].down
            for check in self.checks.values():
                if check.down:
                    if self._repeat_s and now - check.last_paged >= self._repeat_s:
                        check.last_paged = now
                        self._page(f"MAMAROOM STILL DOWN: {check.meaning} ({check.reason})")
                    continue
                if broker_down and check.name.startswith("gateway "):
                    continue  # unknowable while the broker is down; that page went out
                silent = now - check.last_ok
                if silent > check.silence_s:
                    why = self.server_why if check.name == SERVER else ""
                    self._down(
                        check,
                        f"{why}; not ready for {silent:.0f} s"
                        if why
                        else f"silent for {silent:.0f} s",
                    )

    def _gateways(self) -> list[Check]:
        return [c for c in self.checks.values() if c.name.startswith("gateway ")]

    def _down(self, check: Check, reason: str) -> None:
        check.down = True
        check.reason = reason
        check.last_paged = self._clock()
        log.error("watchdog: down", check=check.name, reason=reason)
        self._page(f"MAMAROOM DOWN: {check.meaning} ({reason})")

    def _page(self, text: str) -> None:
        self._send(text)


class Pager:
    """Sends one text to every configured security-desk destination."""

    def __init__(self, settings: Settings) -> None:
        from paging.espa import EspaLink
        from paging.im import ImChannel

        cfg = settings.watchdog
        self.targets: list[tuple[Channel, str]] = []
        self._closers: list[Callable[[], None]] = []
        if cfg.espa_port and cfg.pagers:
            # The server's ESPA settings, on the watchdog's own serial line.
            espa = EspaLink(settings.paging.espa.model_copy(update={"port": cfg.espa_port}))
            espa.start()
            self._closers.append(espa.stop)
            self.targets += [(espa, p) for p in cfg.pagers]
        if cfg.im:
            unknown = [n for n in cfg.im if n not in settings.paging.im.destinations]
            if unknown:
                raise ValueError(f"watchdog.im names no paging.im.destinations entry: {unknown}")
            im = ImChannel({n: settings.paging.im.destinations[n] for n in cfg.im})
            self._closers.append(im.stop)
            self.targets += [(im, n) for n in cfg.im]
        if not self.targets:
            log.warning(
                "watchdog has nobody to page: set watchdog.pagers (with "
                "watchdog.espa_port) or watchdog.im; it only logs"
            )

    def send(self, text: str) -> None:
        for channel, target in self.targets:

            def done(
                ok: bool,  # noqa: FBT001 (paging.channel.Done's (ok, detail))
                detail: str,
                channel: str = channel.name,
                target: str = target,
            ) -> None:
                if ok:
                    log.info("watchdog paged", channel=channel, target=target, text=text)
                else:
                    log.error(
                        "watchdog page failed",
                        channel=channel,
                        target=target,
                        detail=detail,
                        text=text,
                    )

            channel.send(target, text, done)

    def close(self) -> None:
        for close in self._closers:
            close()


class BrokerProbe:
    """The watchdog's own MQTT connection: gateway wills and heartbeats in,
    a ping to itself out (paho's thread; reconnects by itself)."""

    def __init__(self, settings: Settings, watchdog: Watchdog) -> None:
        mqtt = settings.mqtt
        self._watchdog = watchdog
        self._settings = settings
        self.ping_topic = watchdog_ping_topic(settings.watchdog.client_id)
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.watchdog.client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        if mqtt.username:
            self._client.username_pw_set(mqtt.username, mqtt.password)
        if mqtt.tls:
            import ssl

            self._client.tls_set_context(ssl.create_default_context())
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def start(self) -> None:
        mqtt = self._settings.mqtt
        self._client.connect_async(mqtt.host, mqtt.port, keepalive=min(mqtt.keepalive_s, 10))
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def ping(self) -> None:
        if self._client.is_connected():
            self._client.publish(self.ping_topic, str(time.time()).encode(), qos=0)

    def _on_connect(
        self, client: paho.Client, _u: object, _f: object, rc: object, _p: object = None
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("watchdog: broker refused the connection", reason=str(rc))
            return
        client.subscribe(GATEWAY_SUBSCRIPTION, qos=1)
        client.subscribe(self.ping_topic, qos=0)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.ping_topic:
            self._watchdog.alive(BROKER)
            return
        try:
            gateway, what = parse_gateway_topic(msg.topic)
        except ValueError:
            return
        name, payload = gateway_check(gateway), bytes(msg.payload)
        if what is GatewayTopicKind.STATUS and payload == b"offline":
            self._watchdog.dead(name, "status offline: stopped, or its last will")
        elif not msg.retain and (what is GatewayTopicKind.STATS or payload == b"online"):
            self._watchdog.alive(name)


async def run_watchdog(settings: Settings) -> None:
    cfg = settings.watchdog
    pager = Pager(settings)
    watchdog = Watchdog(settings, send=pager.send)
    probe = BrokerProbe(settings, watchdog)
    server_url = cfg.server_url or f"http://{settings.http.host}:{settings.http.port}"
    server_url = server_url.rstrip("/")
    probe.start()
    log.info(
        "watchdog started",
        broker=settings.mqtt.url,
        server=server_url,
        checks=list(watchdog.checks),
        destinations=len(pager.targets),
    )
    try:
        async with httpx.AsyncClient(timeout=min(cfg.check_s, 5.0)) as http:
            while True:
                probe.ping()
                ready = live = False
                why = ""
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = await http.get(f"{server_url}/readyz")
                    ready = answer.status_code == 200
                    live = ready or (await http.get(f"{server_url}/healthz")).status_code == 200
                    if not ready and answer.headers.get("content-type", "").startswith(
                        "application/json"
                    ):
                        checks = answer.json().get("checks", {})
                        why = ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
                watchdog.server_answered(ready=ready, live=live, why=why[:100])
                watchdog.evaluate()
                await asyncio.sleep(cfg.check_s)
    finally:
        probe.stop()
        pager.close()
        log.info("watchdog stopped")
