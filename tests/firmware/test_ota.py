"""Over-the-air updates on the real MicroPython interpreter (unix port): a
node laid out as `mamaroom device provision` lays out a board, against a real
Mosquitto, downloading bundles from a real HTTP server. The unix board's
reset ends the process with 75; the test starts it again, as the chip would
restart."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom import firmware_bundle as fb
from mamaroom.contract import Kind, device_topic
from tests.firmware.test_logic import micropython
from tests.support import Mosquitto, wait_for

# The node's whole heap. Loading ota.py needs 16 KB free (commands.OTA_FREE),
# and leaves ~3 KB of interned names behind for good. The node refuses in
# the 72 KB of the other tests (~8 KB free; tested below); in 88 KB (80 KB
# before issue 13's safeguards took ~8 KB more) it has room for several
# updates in one boot. An ESP32's MicroPython heap starts at 56 KB and
# grows, and the check counts that (docs/firmware.md, heap figures).
HEAP = "88K"
OLD = "1.0.0"  # firmware/version.py: the factory image
NEW = "1.0.1-test"
RESET_RC = 75


class HttpFiles:
    """Python's http.server on a free port, serving one folder (HTTP/1.0)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Watcher:
    """The node's status and telemetry, as a server would see them."""

    def __init__(self, broker: Mosquitto, device: str) -> None:
        self.device = device
        self.status: str | None = None
        self.telemetry: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{device}")

        def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
            with self.lock:
                if m.topic.endswith("/status"):
                    self.status = m.payload.decode()
                elif m.topic.endswith("/telemetry"):
                    self.telemetry.append(json.loads(m.payload))

        self.subscribed = 0  # SUBACKs: one per (re)connect

        def on_subscribe(*_: object) -> None:
            self.subscribed += 1

        self.client.on_message = on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"mr/v1/dev/{device}/#", qos=1)
        self.client.on_subscribe = on_subscribe
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.wait_subscribed(0)

    def wait_subscribed(self, before: int) -> None:
        wait_for(lambda: self.subscribed > before, timeout=30, what="watcher subscribed")

    def last(self) -> dict[str, Any] | None:
        with self.lock:
            return self.telemetry[-1] if self.telemetry else None

    def since(self, n: int) -> list[dict[str, Any]]:
        with self.lock:
            return self.telemetry[n:]

    def ota(self, cmd: dict[str, Any]) -> int:
        """Send an `ota` command; how many telemetry messages came before it."""
        n = len(self.telemetry)
        info = self.client.publish(
            device_topic(self.device, Kind.CMD), json.dumps({"cmd": "ota", **cmd}), qos=1
        )
        info.wait_for_publish(timeout=10)
        return n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class UnixNode:
    """A room node on the unix port, in its own folder: the board's flash.

    The folder is a short one in /tmp, linked from `where` for the test's
    eyes: the unix port names every module by its absolute path, and in a
    64 KB heap pytest's long temp paths cost a board's ~1.5 KB (a board's
    paths are "/app.mpy")."""

    def __init__(
        self, where: Path, broker: Mosquitto, device: str, heap: str = HEAP, **config: Any
    ) -> None:
        self.heap = heap
        self.root = root = Path(tempfile.mkdtemp(prefix="mr-", dir="/tmp"))
        where.symlink_to(root)
        self.device = device
        fb.write_tree(fb.board_files(), root)
        cfg = {
            "device": device,
            "broker": broker.url,
            "telemetry_s": 60,
            "ota_confirm_s": 8,
            **config,
        }
        (root / "config.json").write_text(json.dumps(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> UnixNode:
        self.runs += 1
        log = (self.root / "console.log").open("ab")
        log.write(f"--- run {self.runs} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [micropython(), "-X", f"heapsize={self.heap}", "main.py"],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node did not restart within {timeout} s\n{self.log()}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def fw(self) -> dict[str, Any] | None:
        p = self.root / "var" / "fw.json"
        return json.loads(p.read_text()) if p.exists() else None

    def log(self) -> str:
        p = self.root / "console.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[HttpFiles]:
    files = HttpFiles(tmp_path / "www")
    yield files
    files.close()


@pytest.fixture
def bundle(http_files: HttpFiles) -> fb.Bundle:
    b = fb.build_bundle(version=NEW)
    (http_files.root / f"{NEW}.bundle").write_bytes(b.data)
    return b


@pytest.fixture
def node(tmp_path: Path, broker: Mosquitto) -> Iterator[UnixNode]:
    n = UnixNode(tmp_path / "node", broker, "n-ota-1")
    yield n
    n.remove()


@pytest.fixture
def watcher(broker: Mosquitto) -> Iterator[Watcher]:
    w = Watcher(broker, "n-ota-1")
    yield w
    w.close()


def online_with(
    watcher: Watcher, node: UnixNode, version: str, after: int = 0, timeout: float = 60
) -> dict[str, Any]:
    """The node's first telemetry (after the first `after`) reporting `version`."""
    return wait_for(
        lambda: next((t for t in watcher.since(after) if t.get("fw") == version), None),
        timeout=timeout,
        what=f"telemetry with fw {version}",
        detail=lambda: f"telemetry: {watcher.since(after)}\n{node.log()}",
    )


def test_bad_updates_are_refused_and_the_node_runs_on(
    node: UnixNode, watcher: Watcher, bundle: fb.Bundle, http_files: HttpFiles
) -> None:
    node.start()
    online_with(watcher, node, OLD)
    url = http_files.url(f"{NEW}.bundle")
    wrong = hashlib.sha256(b"another bundle").hexdigest()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": url, "sha256": wrong, "version": NEW}, "sha256 mismatch"),
        (
            {"url": url, "sha256": bundle.sha256, "version": NEW, "size": len(bundle.data) + 1},
            "bad size",
        ),
        (
            {"url": http_files.url("9.9.9.bundle"), "sha256": bundle.sha256, "version": "9.9.9"},
            "HTTP 404",
        ),
        ({"url": url, "sha256": bundle.sha256, "version": "2.0.0"}, "not version 2.0.0"),
        (
            {"url": url.replace("127.0.0.1", "localhost"), "sha256": bundle.sha256, "version": NEW},
            "by IP address",
        ),
    ]
    for cmd, why in cases:
        n = watcher.ota(cmd)
        note = wait_for(
            lambda: next(
                (t["ota"] for t in watcher.since(n) if why in (t.get("ota") or "")),  # noqa: B023 (polled before the loop moves on)
                None,
            ),
            timeout=60,
            what=f"telemetry saying why ({why})",
            detail=lambda: f"{watcher.since(n)}\n{node.log()}",  # noqa: B023 (polled before the loop moves on)
        )
        assert note.startswith(f"refused {cmd['version']}: ") and why in note, note
        assert node.alive(), node.log()
        assert (watcher.last() or {}).get("fw") == OLD
        assert node.fw() is None  # var/fw.json never pointed anywhere
        assert list((node.root / "ota-a").iterdir()) == []  # the slot given back
    assert "ota: refused" in node.log()


def update_and_restart(
    node: UnixNode, watcher: Watcher, http_files: HttpFiles, b: fb.Bundle
) -> int:
    """Send the update; the node verifies it, points var/fw.json at it and
    resets; start it again. How many telemetry messages came before."""
    n = watcher.ota(
        {
            "url": http_files.url(f"{b.version}.bundle"),
            "sha256": b.sha256,
            "version": b.version,
            "size": len(b.data),
        }
    )
    assert node.wait_exit(60) == RESET_RC, node.log()
    fw = node.fw()
    assert fw is not None and fw["state"] == "trial" and fw["version"] == b.version, fw
    node.start()
    return n


def test_a_good_update_is_applied_and_the_node_comes_back_on_it(
    node: UnixNode, watcher: Watcher, bundle: fb.Bundle, http_files: HttpFiles
) -> None:
    node.start()
    online_with(watcher, node, OLD)
    n = update_and_restart(node, watcher, http_files, bundle)
    t = online_with(watcher, node, NEW, after=n)
    assert t["reset_reason"] == "ota" and t["ota"] == "on trial", t
    assert (node.fw() or {}).get("state") == "trial"  # not proven yet
    # Proven after ota_confirm_s (8 s here) with no task restarted and its
    # telemetry acknowledged by the broker: confirmed, and telemetry says so.
    t = wait_for(
        lambda: next((t for t in watcher.since(n) if t.get("ota") == f"updated to {NEW}"), None),
        timeout=60,
        what="the update confirmed",
        detail=node.log,
    )
    assert t["fw"] == NEW and t["reset_reason"] == "ota", t
    assert node.fw() == {
        "slot": "ota-a",
        "state": "ok",
        "version": NEW,
        "boots": 1,
        "prev": "",
        "prev_version": OLD,
    }
    # What runs is the slot's: every file as the bundle has it.
    for f in bundle.files:
        assert (node.root / "ota-a" / f.path).read_bytes() == f.data
    # The next update goes into the other slot, and the running one becomes the fallback.
    newer = fb.build_bundle(version="1.0.2-test")
    (http_files.root / "1.0.2-test.bundle").write_bytes(newer.data)
    n = update_and_restart(node, watcher, http_files, newer)
    online_with(watcher, node, "1.0.2-test", after=n)
    wait_for(
        lambda: (node.fw() or {}).get("state") == "ok",
        timeout=60,
        what="confirmed",
        detail=node.log,
    )
    fw = node.fw()
    assert fw is not None and (fw["slot"], fw["prev"], fw["prev_version"]) == (
        "ota-b",
        "ota-a",
        NEW,
    ), fw


def test_an_update_that_never_comes_online_is_rolled_back(
    node: UnixNode, watcher: Watcher, bundle: fb.Bundle, http_files: HttpFiles, broker: Mosquitto
) -> None:
    node.start()
    online_with(watcher, node, OLD)
    watcher.ota({"url": http_files.url(f"{NEW}.bundle"), "sha256": bundle.sha256, "version": NEW})
    assert node.wait_exit(60) == RESET_RC, node.log()
    broker.stop()  # the update cannot reach the broker: never confirmed
    node.start()
    # ota_confirm_s is 8 in this node's config.json: trial.py rolls back by itself.
    assert node.wait_exit(60) == RESET_RC, node.log()
    assert "rolling back 1.0.1-test: no telemetry acknowledged within 8 s" in node.log()
    assert node.fw() == {"slot": "", "state": "ok", "version": OLD}
    subscribed = watcher.subscribed
    broker.start()
    watcher.wait_subscribed(subscribed)
    n = len(watcher.since(0))
    node.start()
    t = online_with(watcher, node, OLD, after=n)
    assert t["reset_reason"] == "rollback", t


def test_an_update_that_crashes_at_boot_is_rolled_back(
    node: UnixNode, watcher: Watcher, http_files: HttpFiles, tmp_path: Path
) -> None:
    src = tmp_path / "broken-firmware"
    fb.write_tree(
        [fb.FirmwareFile(name, path.read_bytes()) for name, path in fb.module_sources()], src
    )
    (src / "app.py").write_text('raise RuntimeError("a broken release")\n')
    broken = fb.build_bundle(src, version=NEW)
    (http_files.root / f"{NEW}.bundle").write_bytes(broken.data)
    node.start()
    online_with(watcher, node, OLD)
    n = update_and_restart(node, watcher, http_files, broken)
    assert node.wait_exit(60) == RESET_RC, node.log()  # crashed on trial: rolled back
    assert "a broken release" in node.log()
    node.start()
    t = online_with(watcher, node, OLD, after=n)
    assert t["reset_reason"] == "rollback", t


def test_a_release_whose_publisher_crashes_is_rolled_back(
    node: UnixNode, watcher: Watcher, http_files: HttpFiles, tmp_path: Path
) -> None:
    # It boots and gets online (the broker sees its birth), but it could never
    # deliver a call: its publisher fails every time the supervisor starts it.
    src = tmp_path / "broken-firmware"
    fb.write_tree(
        [fb.FirmwareFile(name, path.read_bytes()) for name, path in fb.module_sources()], src
    )
    report = (src / "report.py").read_text()
    start = 'async def publisher(node):\n    """'
    assert start in report
    (src / "report.py").write_text(
        report.replace(
            start,
            'async def publisher(node):\n    raise RuntimeError("a broken publisher")\n    """',
        )
    )
    broken = fb.build_bundle(src, version=NEW)
    (http_files.root / f"{NEW}.bundle").write_bytes(broken.data)
    node.start()
    online_with(watcher, node, OLD)
    n = update_and_restart(node, watcher, http_files, broken)
    assert node.wait_exit(60) == RESET_RC, node.log()
    log = node.log()
    assert "a broken publisher" in log and "mqtt: online at" in log.split("--- run 2 ---")[1]
    assert "rolling back 1.0.1-test: a task restarted on trial" in log, log
    assert node.fw() == {"slot": "", "state": "ok", "version": OLD}
    node.start()
    t = online_with(watcher, node, OLD, after=n)
    assert t["reset_reason"] == "rollback", t


def test_a_release_that_never_reads_a_puback_is_rolled_back(
    node: UnixNode, watcher: Watcher, http_files: HttpFiles, tmp_path: Path
) -> None:
    # Its connection drops at the broker's first acknowledgement, every time:
    # it gets online again and again and publishes its telemetry, but never
    # learns that anything arrived (nor would it read a call_ack). A reconnect
    # forgets the telemetry it had in flight: gone from the in-flight table is
    # not acknowledged (only a PUBACK of it proves the release).
    src = tmp_path / "broken-firmware"
    fb.write_tree(
        [fb.FirmwareFile(name, path.read_bytes()) for name, path in fb.module_sources()], src
    )
    mqtt = (src / "mqtt.py").read_text()
    puback = "                if kind == 0x40:  # PUBACK\n"
    assert puback in mqtt
    (src / "mqtt.py").write_text(
        mqtt.replace(puback, puback + '                    raise MQTTError("a broken reader")\n')
    )
    broken = fb.build_bundle(src, version=NEW)
    (http_files.root / f"{NEW}.bundle").write_bytes(broken.data)
    node.start()
    online_with(watcher, node, OLD)
    n = update_and_restart(node, watcher, http_files, broken)
    online_with(watcher, node, NEW, after=n)  # its telemetry reaches the broker
    assert node.wait_exit(60) == RESET_RC, node.log()
    log = node.log()
    assert "a broken reader" in log, log
    assert "rolling back 1.0.1-test: no telemetry acknowledged within 8 s" in log, log
    assert node.fw() == {"slot": "", "state": "ok", "version": OLD}


def test_a_node_without_the_heap_for_an_update_refuses_it_and_runs_on(
    tmp_path: Path, broker: Mosquitto, watcher: Watcher, bundle: fb.Bundle, http_files: HttpFiles
) -> None:
    node = UnixNode(tmp_path / "small", broker, "n-ota-1", heap="72K", telemetry_s=1)
    try:
        node.start()
        online_with(watcher, node, OLD)
        n = watcher.ota(
            {"url": http_files.url(f"{NEW}.bundle"), "sha256": bundle.sha256, "version": NEW}
        )
        note = wait_for(
            lambda: next((t["ota"] for t in watcher.since(n) if t.get("ota")), None),
            timeout=60,
            what="the refusal",
            detail=node.log,
        )
        assert note.startswith(f"refused {NEW}: ") and "an update needs" in note, note
        # Untouched by it: telemetry goes on every second, no task failed.
        m = len(watcher.since(0))
        wait_for(
            lambda: len(watcher.since(m)) >= 3,
            timeout=60,
            what="telemetry going on",
            detail=node.log,
        )
        assert node.alive() and "failed" not in node.log() and node.fw() is None, node.log()
    finally:
        node.remove()
