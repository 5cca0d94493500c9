"""Whole room nodes for tests: the real firmware (precompiled with mpy-cross)
on the real MicroPython unix port, in a 72 KB heap, against a real
Mosquitto; its simulated room driven over the unix board's control port,
and a stand-in for the server that watches what the node publishes and
sends it commands."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.contract import (
    PAYLOAD_MODELS,
    Kind,
    NodeTelemetry,
    device_topic,
    parse_device_topic,
    parse_payload,
    parse_status,
)
from tests.support import free_port, wait_for

HEAP = "72K"  # the whole heap: issue 3's 64 KB + issue 13's safeguards (docs/firmware.md, heap)


def micropython() -> str:
    found = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    assert Path(found).exists(), "micropython missing: `make test` installs it (PyPI)"
    return found


class Node:
    """One firmware process in its own directory (config.json, var/), with its
    log lines collected as they come."""

    def __init__(
        self,
        workdir: Path,
        firmware: Path,
        device: str,
        broker_port: int,
        heap: str = HEAP,
        env: dict[str, str] | None = None,
        **config: Any,
    ) -> None:
        self.workdir = workdir
        self.firmware = firmware
        self.device = device
        self.heap_size = heap
        self.env = env  # added to the process's environment (MAMAROOM_TICKS_START)
        self.sim_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config: dict[str, Any] = {
            "device": device,
            "broker": f"mqtt://127.0.0.1:{broker_port}",
            "ntp": "",
            "sim_port": self.sim_port,
            "telemetry_s": 60,
            "occupancy_s": 300,
            # Short filters: tests wait seconds, not the half minute a room does.
            "filters": {"delayed_on_ms": 300, "delayed_off_ms": 1500},
            **config,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ctl: socket.socket | None = None
        self._ctl_buf = b""

    def write_config(self, raw: str | None = None) -> None:
        (self.workdir / "config.json").write_text(
            raw if raw is not None else json.dumps(self.config)
        )

    def start(self, config: bool = True) -> Node:
        if config:
            self.write_config()
        self.proc = self._popen()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_for(
            self._control_port_answers,
            timeout=30,
            what=f"{self.device} control port",
            detail=self.log_tail,
        )
        return self

    def _popen(self) -> subprocess.Popen[str]:
        # Started as `fw/main.py` (a link to the build): the unix port interns
        # every module's path for good, and pytest's long temp paths would
        # cost the 64 KB heap ~2 KB a board never pays (its paths are "/app.mpy").
        link = self.workdir / "fw"
        if not link.exists():
            link.symlink_to(self.firmware)
        return subprocess.Popen(
            [micropython(), "-X", f"heapsize={self.heap_size}", "fw/main.py"],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **self.env} if self.env else None,
        )

    def run_to_exit(self, timeout: float = 30) -> tuple[int, str]:
        """One boot that is expected to end by itself: (exit code, output).
        75 is the unix board's reset (the chip would restart)."""
        proc = self._popen()
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"the node did not end within {timeout} s:\n{out}") from None
        return proc.returncode, out

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _control_port_answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return self.ctl("buzzer?").startswith("buzzer")
        except OSError:
            self._close_ctl()
            return False

    def ctl(self, command: str) -> str:
        """One control-port command, its one-line answer."""
        if self._ctl is None:
            self._ctl = socket.create_connection(("127.0.0.1", self.sim_port), timeout=10)
            self._ctl_buf = b""
        self._ctl.sendall(command.encode() + b"\n")
        while b"\n" not in self._ctl_buf:
            data = self._ctl.recv(256)
            if not data:
                self._close_ctl()
                raise ConnectionError("control port closed")
            self._ctl_buf += data
        line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
        return line.decode()

    def _close_ctl(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None

    def lamp(self) -> str:
        return self.ctl("lamp?").removeprefix("lamp ")

    def buzzer(self) -> bool:
        return self.ctl("buzzer?") == "buzzer on"

    def heap(self) -> tuple[int, int, int]:
        """(allocated, free, largest free block) bytes after a collection."""
        _, alloc, free, block = self.ctl("heap?").split()
        return int(alloc), int(free), int(block)

    def press(self) -> None:
        """A finger on the emergency button, and off it again."""
        assert self.ctl("press") == "ok"
        assert self.ctl("release") == "ok"

    def logged(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def log_tail(self, n: int = 40) -> str:
        return f"--- node {self.device} ---\n" + "\n".join(self.lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self._close_ctl()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def unnamed_fields(kind: Kind, payload: bytes) -> None:
    """ValueError if the node sent a field the contract does not name: the
    payload model's, or for telemetry NodeTelemetry's (each typed there too)."""
    if kind is Kind.TELEMETRY:
        NodeTelemetry.model_validate_json(payload)  # extra="forbid"
        return
    unnamed = set(json.loads(payload)) - set(PAYLOAD_MODELS[kind].model_fields)
    if unnamed:
        raise ValueError(f"fields the contract does not name: {sorted(unnamed)}")


class Server:
    """A stand-in for the gateway and server: every message under mr/v1/dev/,
    each checked with the contract's own parsers (what the gateway accepts)
    and against the fields the contract names, and `cmd` sent the way the
    server sends it."""

    def __init__(self, broker_port: int) -> None:
        self.messages: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self.seen: list[tuple[str, str, Any]] = []  # (device, kind, payload)
        self.rejected: list[str] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"srv-{free_port()}", protocol=paho.MQTTv311
        )
        self.client.on_connect = lambda c, *_: c.subscribe("mr/v1/dev/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port, keepalive=30)
        self.client.loop_start()
        wait_for(self.client.is_connected, timeout=15, what="server stand-in connected")

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        try:
            topic = parse_device_topic(m.topic)
            if topic.kind == Kind.CMD:
                return
            body: Any
            if topic.kind == Kind.STATUS:
                body = parse_status(bytes(m.payload))
            else:
                parse_payload(topic.kind, bytes(m.payload))  # as the gateway checks it
                unnamed_fields(topic.kind, bytes(m.payload))
                body = json.loads(m.payload)  # kept whole: extra fields too
        except ValueError as e:  # the contract refuses it: the gateway would too
            self.rejected.append(f"{m.topic} {m.payload!r}: {e}")
            return
        item = (topic.device, str(topic.kind), body)
        self.seen.append(item)
        self.messages.put(item)

    def of(self, device: str, kind: str) -> list[Any]:
        return [b for d, k, b in self.seen if d == device and k == kind]

    def wait(
        self,
        device: str,
        kind: str,
        match: Any = None,
        timeout: float = 30,
        what: str = "",
        detail: Callable[[], str] | None = None,
    ) -> Any:
        """The first message of that kind seen (matching `match`, a function
        of the payload, if given), waiting for it if need be."""

        def check() -> Any:
            for b in self.of(device, kind):
                if match is None or match(b):
                    return b or True
            return None

        return wait_for(check, timeout=timeout, what=what or f"{device} {kind}", detail=detail)

    def call_ack(self, device: str, call_id: str, status: str) -> None:
        self.cmd(device, {"cmd": "call_ack", "call_id": call_id, "status": status})

    def cmd(self, device: str, body: dict[str, Any] | bytes) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        wait_for(self.client.is_connected, timeout=30, what="server stand-in connected")
        self.client.publish(device_topic(device, Kind.CMD), payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def seqs_increase(msgs: list[dict[str, Any]]) -> bool:
    """`seq` strictly increasing within each boot, in the order the broker
    delivered them (a QoS 1 redelivery repeats one: the gateway dedupes it)."""
    by_boot: dict[int, list[int]] = {}
    for m in msgs:
        by_boot.setdefault(m["boot"], []).append(m["seq"])
    firsts = [list(dict.fromkeys(s)) for s in by_boot.values()]
    return all(f == sorted(f) for f in firsts)


def now_ms() -> int:
    return int(time.time() * 1000)
