"""Real parts for tests: Mosquitto, mamaroom processes and device stand-ins,
each on free ports in a temp dir; polling helpers instead of sleeps."""

from __future__ import annotations

import getpass
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.contract import Kind, device_topic
from mamaroom.mqtt_socket import no_delay

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mamaroom.conf"


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768+ on Linux):
    a port from bind(0) is one the kernel also hands to outgoing connections,
    so on a busy machine a client socket could take it before our server
    binds it. Random, so parallel test runs rarely try the same one."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    extra = f"\nlast error: {last_error!r}" if last_error else ""
    extra += f"\n{detail()}" if detail else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed: run `make test` (it installs it)")
    return found


class Mosquitto:
    """A private Mosquitto on a free port; `restart()` keeps the port."""

    def __init__(self, workdir: Path, *, persistence: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        # The shipped config (queue and in-flight sizing, autosave), with only
        # the listener, paths and persistence templated for the test.
        templated = (
            "listener",
            "persistence",
            "allow_anonymous",
            # The production listeners' auth and TLS: tests/security/ keep them.
            "per_listener_settings",
            "password_file",
            "acl_file",
            "use_username_as_clientid",
            "cafile",
            "certfile",
            "keyfile",
            "tls_version",
        )
        shipped = [
            line
            for line in SHIPPED_MOSQUITTO_CONF.read_text().splitlines()
            if not line.startswith(templated)
        ]
        self.conf.write_text(
            "\n".join(
                [
                    *shipped,
                    f"listener {self.port} 127.0.0.1",
                    # Started as root, mosquitto would drop to user `mosquitto`, which
                    # cannot write the persistence file or log in a private temp dir.
                    f"user {getpass.getuser()}",
                    "allow_anonymous true",
                    f"persistence {'true' if persistence else 'false'}",
                    f"persistence_location {workdir}/",
                    f"log_dest file {workdir}/mosquitto.log",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                ]
            )
            + "\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=15, what=f"mosquitto on port {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        log = self.workdir / "mosquitto.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""


def influxd_binary() -> str:
    found = shutil.which("influxd") or (
        "/usr/bin/influxd" if os.path.exists("/usr/bin/influxd") else None
    )
    if not found:
        raise RuntimeError(
            "influxd is not installed: run `make test` (it installs Debian's influxdb)"
        )
    return found


class InfluxDB:
    """A private InfluxDB 1.x (Debian's influxd) on free ports, data in a temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.rpc_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "influxdb.conf"
        self.conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{workdir}/meta"\n'
            f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InfluxDB:
        log = (self.workdir / "influxd.log").open("ab")
        self.proc = subprocess.Popen(
            [influxd_binary(), "-config", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_for(self._answers, timeout=60, what=f"influxd on port {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"influxd exited: {self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/ping", timeout=1).status_code == 204
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def query(self, q: str, db: str = "mamaroom") -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/query", params={"db": db, "q": q, "epoch": "ns"}, timeout=10)
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise ValueError(result["error"])
        return list(result.get("series", []))

    def count(self, measurement: str, field: str, rp: str = "") -> int:
        source = f'"{rp}"."{measurement}"' if rp else f'"{measurement}"'
        series = self.query(f'SELECT count("{field}") FROM {source}')
        return int(series[0]["values"][0][1]) if series else 0

    def log_tail(self, lines: int = 30) -> str:
        log = self.workdir / "influxd.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )


class Proc:
    """A `mamaroom` subcommand in its own process, its output kept in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.name} log ---\n" + "\n".join(self.log().splitlines()[-lines:])


def write_rooms_csv(path: Path, rooms: Sequence[tuple[str, str | None]]) -> Path:
    """A small rooms CSV: (room id, device id or None) per room."""
    lines = ["room_id,name,name_en,building,building_en,floor,device"]
    for i, (room, device) in enumerate(rooms):
        lines.append(
            f"{room},测试楼{i + 1}层母婴室,Test Bldg {i + 1}F,测试楼,Test Bldg,"
            f"{i + 1},{device or ''}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sse_events(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float | None = 30,
    verify: ssl.SSLContext | bool = True,
) -> Generator[tuple[str, Any], None, None]:
    """(event, decoded data) from a Server-Sent Events stream, as they come."""
    with httpx.stream("GET", url, headers=headers or {}, timeout=timeout, verify=verify) as resp:
        event = "message"
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])


class Device:
    """A test stand-in for a room node: its own MQTT connection with the
    contract's retained birth and last will, and a strictly increasing seq."""

    def __init__(self, broker_port: int, device: str, *, boot: int = 1) -> None:
        self.device = device
        self.boot = boot
        self.seq = 0
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        self.client.will_set(device_topic(device, Kind.STATUS), b"offline", qos=1, retain=True)
        #: Commands received on the node's `cmd` topic (decoded JSON), in order.
        self.commands: list[dict[str, Any]] = []

        def on_connect(c: paho.Client, *_: object) -> None:
            no_delay(c.socket())  # as the firmware does
            # Like a real node: re-subscribe, then the retained birth, on every (re)connect.
            c.subscribe(device_topic(device, Kind.CMD), qos=1)
            c.publish(device_topic(device, Kind.STATUS), b"online", qos=1, retain=True)

        self.client.on_connect = on_connect
        self.client.on_message = lambda _c, _u, m: self.commands.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", broker_port, keepalive=30)
        self.client.loop_start()
        wait_for(self.client.is_connected, timeout=15, what=f"{device} connected")

    def envelope(self, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"v": 1, "boot": self.boot, "seq": self.seq, "ts": int(time.time() * 1000), **fields}

    def occupancy(self, occupied: bool, **extra: Any) -> dict[str, Any]:
        msg = self.envelope(occupied=occupied, source="door", **extra)
        self.publish(Kind.OCCUPANCY, msg)
        return msg

    def call(self, action: str, call_id: str, **extra: Any) -> dict[str, Any]:
        msg = self.envelope(action=action, call_id=call_id, **extra)
        self.publish(Kind.CALL, msg)
        return msg

    def statuses(self, call_id: str) -> list[str]:
        """The call statuses the server sent this node, in order."""
        return [
            c["status"]
            for c in self.commands
            if c.get("cmd") == "call_ack" and c.get("call_id") == call_id
        ]

    def telemetry(self) -> dict[str, Any]:
        msg = self.envelope(uptime_s=10, rssi=-60, heap_free=80000, fw="test")
        self.publish(Kind.TELEMETRY, msg)
        return msg

    def publish(self, kind: Kind, body: dict[str, Any]) -> None:
        self.publish_raw(device_topic(self.device, kind), json.dumps(body).encode())

    def publish_raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        # After a broker restart paho reconnects by itself; wait for it.
        wait_for(self.client.is_connected, timeout=30, what=f"{self.device} connected")
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class DeviceFactory(Protocol):
    """The `device_factory` fixture: a Device on the test's broker, closed
    when the test ends."""

    def __call__(self, device: str, boot: int = 1) -> Device: ...


class Broker(Protocol):
    """What Services use of their broker: a Mosquitto, or the production
    configuration's (tests/security/broker.py)."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...

    def log_tail(self, lines: int = ...) -> str: ...


class Services:
    """Gateway and server of one test, against one broker, in one data dir."""

    def __init__(
        self,
        broker: Broker,
        workdir: Path,
        rooms_csv: Path,
        *,
        influx: InfluxDB | None = None,
        **env: str,
    ) -> None:
        self.broker = broker
        self.workdir = workdir
        self.http_port = free_port()
        self.metrics_port = free_port()
        if influx is not None:
            env = {
                "MAMAROOM_STORAGE__BACKEND": "influxdb",
                "MAMAROOM_STORAGE__INFLUXDB__URL": influx.url,
                "MAMAROOM_STORAGE__INFLUXDB__FLUSH_INTERVAL_S": "0.2",
                **env,
            }
        self.env = {
            **os.environ,
            "MAMAROOM_MQTT__URL": broker.url,
            "MAMAROOM_HTTP__PORT": str(self.http_port),
            "MAMAROOM_GATEWAY__METRICS_PORT": str(self.metrics_port),
            "MAMAROOM_DATA_DIR": str(workdir / "data"),
            "MAMAROOM_ROOMS_CSV": str(rooms_csv),
            "MAMAROOM_LOG__LEVEL": "debug",
            # Most tests page nobody; those that test paging set tiers and channels.
            "MAMAROOM_PAGING__ALLOW_NO_TARGET": "true",
            **env,
        }
        self.server = Proc("server", ["server"], self.env, workdir)
        self.gateway = Proc("gateway", ["gateway"], self.env, workdir)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def logs(self) -> str:
        return "\n".join(
            [
                self.server.log_tail(),
                self.gateway.log_tail(),
                "--- mosquitto ---",
                self.broker.log_tail(),
            ]
        )

    ADMIN_PASSWORD = "test-admin-password"

    def start_server(self) -> None:
        # An admin account, made the way an operator makes one.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "user",
                "add",
                "admin",
                "--role",
                "admin",
                "--password-stdin",
            ],
            input=self.ADMIN_PASSWORD + "\n",
            text=True,
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        self.server.start()
        wait_for(
            lambda: self.http.get("/readyz").status_code == 200,
            timeout=60,
            what="server ready",
            detail=self.logs,
        )
        self._token: str | None = None

    def start_gateway(self) -> None:
        self.gateway.start()
        wait_for(
            lambda: self.metrics()["mamaroom_gateway_ready"] == 1,
            timeout=60,
            what="gateway connected with the registry loaded",
            detail=self.logs,
        )

    def start(self) -> Services:
        self.start_server()
        self.start_gateway()
        return self

    def stop(self) -> None:
        self.gateway.stop()
        self.server.stop()
        self.http.close()

    def room(self, room_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/rooms/{room_id}")
        r.raise_for_status()
        return dict(r.json())

    def wait_room_state(self, room_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (r := self.room(room_id))["state"] == state and r,
            timeout=timeout,
            what=f"room {room_id} {state}",
            detail=self.logs,
        )

    def new_gateway(self, name: str, **env: str) -> Proc:
        """Another gateway process on the same broker and data dir."""
        return Proc(name, ["gateway"], {**self.env, **env}, self.workdir)

    def metrics(self, port: int | None = None) -> dict[str, float]:
        """A gateway's Prometheus samples, `name{labels}` → value."""
        url = f"http://127.0.0.1:{port or self.metrics_port}/metrics"
        text = httpx.get(url, timeout=5).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def login(self, name: str, password: str) -> str:
        r = self.http.post("/api/auth/token", data={"username": name, "password": password})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request as the admin account (logged in once per server start)."""
        if getattr(self, "_token", None) is None:
            self._token = self.login("admin", self.ADMIN_PASSWORD)
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self._token}"}
        return self.http.request(method, path, headers=headers, **kwargs)


RESULTS_CHAOS = ROOT / "bench" / "RESULTS-chaos.md"
FAULTS_HEADING = "## Call-path faults (make test)"


#: Only then do the fault tests rewrite their rows in bench/RESULTS-chaos.md
#: (tracked): a plain `make test` leaves the tree clean.
RECORD_RESULTS = os.environ.get("RECORD_RESULTS") == "1"


def record_fault(fault: str, result: str) -> None:
    """One fault test's outcome (calls lost, time to recover) as a row of the
    call-path faults table in bench/RESULTS-chaos.md, with RECORD_RESULTS=1
    (else printed only); `make chaos` rewrites the rest of that file and
    keeps this section (tests/chaos/test_chaos.py)."""
    if not RECORD_RESULTS:
        print(
            f"fault result (RECORD_RESULTS=1 writes it to {RESULTS_CHAOS.name}): {fault}: {result}"
        )
        return
    text = RESULTS_CHAOS.read_text(encoding="utf-8") if RESULTS_CHAOS.exists() else ""
    head, _, section = text.partition(FAULTS_HEADING)
    # This section ends at the next heading; the sections after it are kept.
    mine, found, rest = section.partition("\n## ")
    rows = {
        line.split("|")[1].strip(): line
        for line in mine.splitlines()
        if line.startswith("| ") and not line.startswith("| fault") and "---" not in line
    }
    when = time.strftime("%Y-%m-%d", time.gmtime())
    rows[fault] = f"| {fault} | {result} | {when} |"
    RESULTS_CHAOS.write_text(
        head.rstrip("\n")
        + "\n\n"
        + fault_section(list(rows.values()))
        + ("\n## " + rest if found else ""),
        encoding="utf-8",
    )


def fault_section(rows: list[str]) -> str:
    return "\n".join(
        [
            FAULTS_HEADING,
            "",
            "Each fault injected into real processes by a test in `make test`; every "
            "row is rewritten by its test's latest run with `RECORD_RESULTS=1 make test`.",
            "",
            "| fault | result | run |",
            "|---|---|---|",
            *sorted(rows),
            "",
        ]
    )


def kept_fault_section() -> str:
    """The call-path faults section of RESULTS-chaos.md, and the sections
    after it (single fault tests' results), as they are now."""
    text = RESULTS_CHAOS.read_text(encoding="utf-8") if RESULTS_CHAOS.exists() else ""
    _, found, section = text.partition(FAULTS_HEADING)
    return found + section if found else ""
