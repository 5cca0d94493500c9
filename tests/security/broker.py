"""The shipped production Mosquitto config and ACL (deploy/mosquitto/), started
with only its ports and paths templated, its TLS certificate made by the
shipped deploy/mosquitto/make-certs.sh; and an MQTT client that records what
the broker answered."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cli.broker_accounts import new_password, set_password
from tests.support import ROOT, free_port, mosquitto_binary, wait_for

DEPLOY = ROOT / "deploy" / "mosquitto"
SHIPPED_CONF = DEPLOY / "mamaroom.conf"
SHIPPED_ACL = DEPLOY / "mamaroom.acl"
MAKE_CERTS = DEPLOY / "make-certs.sh"
SERVICES = ("mamaroom.gateway", "mamaroom.server", "mamaroom.watchdog")


class ProductionBroker:
    """Mosquitto with deploy/mosquitto/mamaroom.conf: three listeners (local
    services, devices over TLS, services over TLS), passwords, the ACL."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.etc = workdir / "etc"
        self.certs = self.etc / "certs"
        self.data = workdir / "data"
        self.local_port, self.device_port, self.service_tls_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.certs.mkdir(parents=True)
        self.data.mkdir()
        subprocess.run(
            ["sh", str(MAKE_CERTS), str(self.certs), "127.0.0.1", "localhost"],
            check=True,
            capture_output=True,
        )
        shutil.copy(SHIPPED_ACL, self.etc / "mamaroom.acl")
        self.devices_passwd = self.etc / "devices.passwd"
        self.services_passwd = self.etc / "services.passwd"
        self.passwords: dict[str, str] = {}
        for user in SERVICES:
            self.passwords[user] = new_password()
            set_password(self.services_passwd, user, self.passwords[user])
        self.devices_passwd.touch()
        text = SHIPPED_CONF.read_text()
        for old, new in (
            ("listener 1883 127.0.0.1", f"listener {self.local_port} 127.0.0.1"),
            ("listener 8883\n", f"listener {self.device_port} 127.0.0.1\n"),
            ("listener 8884\n", f"listener {self.service_tls_port} 127.0.0.1\n"),
            ("/etc/mosquitto/mamaroom/", f"{self.etc}/"),
            ("/var/lib/mosquitto/", f"{self.data}/"),
        ):
            assert old in text, f"the shipped config no longer has {old!r}"
            text = text.replace(old, new)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            text
            + "\n".join(
                [
                    "",
                    # Started as root, mosquitto would drop to user `mosquitto`, which
                    # cannot read the temp dir.
                    f"user {getpass.getuser()}",
                    f"log_dest file {workdir}/mosquitto.log",
                    "log_type all",
                ]
            )
            + "\n"
        )

    @property
    def ca(self) -> Path:
        return self.certs / "ca.crt"

    @property
    def url(self) -> str:
        """The local services' listener (what Services connect to)."""
        return f"mqtt://127.0.0.1:{self.local_port}"

    @property
    def port(self) -> int:
        """The local services' listener's port, as Mosquitto.port."""
        return self.local_port

    def add_device(self, device: str) -> str:
        password = new_password()
        set_password(self.devices_passwd, device, password)
        self.passwords[device] = password
        if self.proc is not None:
            self.reload()
        return password

    def start(self) -> ProductionBroker:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (self.local_port, self.device_port, self.service_tls_port):
            wait_for(
                lambda: self._answers(port),  # noqa: B023 (polled before the loop moves on)
                timeout=15,
                what=f"mosquitto on port {port}",
                detail=self.log_tail,
            )
        return self

    def _answers(self, port: int) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto` does; wait until it is re-read."""
        assert self.proc is not None
        before = self.log_tail(10_000).count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: self.log_tail(10_000).count("Reloading config") > before,
            timeout=15,
            what="mosquitto reloaded",
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        log = self.workdir / "mosquitto.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""


class Client:
    """A paho client that records the broker's answers: CONNACK, PUBACK reason
    codes (MQTT 5), SUBACK grants, messages, disconnects."""

    def __init__(
        self,
        broker: ProductionBroker,
        user: str | None,
        password: str | None = None,
        *,
        port: int | None = None,
        tls: bool = True,
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = paho.MQTTv311,
        clean: bool = True,
    ) -> None:
        self.port = port or broker.device_port
        self.protocol = protocol
        kwargs: dict[str, Any] = {}
        if protocol != paho.MQTTv5:
            kwargs["clean_session"] = clean
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or user or "",
            protocol=protocol,
            **kwargs,
        )
        if user is not None:
            self.client.username_pw_set(
                user, password if password is not None else broker.passwords[user]
            )
        if tls:
            ctx = ssl.create_default_context(cafile=str(broker.ca))
            self.client.tls_set_context(ctx)
        self.connack: Any = None
        self.messages: list[paho.MQTTMessage] = []
        self.pubacks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        self.disconnects = 0
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(
        self, _c: paho.Client, _u: object, _f: object, rc: Any, _p: object = None
    ) -> None:
        self.connack = rc

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, rc: Any, _p: object = None
    ) -> None:
        self.pubacks[mid] = rc

    def _on_subscribe(
        self, _c: paho.Client, _u: object, mid: int, rcs: list[Any], _p: object = None
    ) -> None:
        self.subacks[mid] = rcs

    def _on_disconnect(self, *_: object) -> None:
        self.disconnects += 1

    def connect(self) -> Any:
        """Connect and return the CONNACK reason code; a refused client is stopped."""
        self.connack = None
        if self.protocol == paho.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's is unannotated
            self.client.connect(
                "127.0.0.1", self.port, keepalive=30, clean_start=True, properties=props
            )
        else:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, timeout=15, what="CONNACK")
        rc = self.connack
        if rc.is_failure:
            self.close()
        return rc

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None, f"subscribe to {topic} not sent"
        wait_for(lambda: mid in self.subacks, timeout=15, what=f"SUBACK for {topic}")
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        """Publish; with QoS 1, wait for the PUBACK and return its reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        info.wait_for_publish(timeout=15)
        wait_for(lambda: info.mid in self.pubacks, timeout=15, what="PUBACK")
        return self.pubacks[info.mid]

    def received(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
