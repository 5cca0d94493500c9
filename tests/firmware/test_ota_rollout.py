"""`mamaroom device ota` driving a rollout over real nodes: MicroPython unix
port nodes, a real Mosquitto, the real server offering the bundle, the CLI
in its own process. Each node is restarted when it resets (exit 75), as a
chip restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mamaroom import firmware_bundle as fb
from tests.firmware.test_ota import NEW, OLD, RESET_RC, UnixNode
from tests.support import ROOT, Mosquitto, Services, wait_for, write_rooms_csv

ROOMS = [("R-0101", "n-ro-1"), ("R-0201", "n-ro-2"), ("R-0301", None)]


class Chip:
    """Starts the node, and again whenever it resets itself."""

    def __init__(self, node: UnixNode) -> None:
        self.node = node
        self.stopped = threading.Event()
        node.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.05):
            proc = self.node.proc
            if proc is not None and proc.poll() == RESET_RC:
                self.node.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.node.stop()


@pytest.fixture
def site(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Services, list[UnixNode]]]:
    svc = Services(broker, tmp_path, write_rooms_csv(tmp_path / "rooms.csv", ROOMS))
    svc.start_server()  # it publishes the registry the rollout reads
    nodes = [UnixNode(tmp_path / dev, broker, dev) for _, dev in ROOMS if dev]
    chips = [Chip(n) for n in nodes]
    yield svc, nodes
    for c in chips:
        c.stop()
        c.node.remove()
    svc.stop()


def ota(svc: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "device",
            "ota",
            "--server",
            svc.base_url,
            "--timeout",
            "120",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **svc.env, "COLUMNS": "200"},
        timeout=400,
    )


def test_a_rollout_updates_room_after_room(site: tuple[Services, list[UnixNode]]) -> None:
    svc, nodes = site
    fb.FirmwareStore(svc.workdir / "data" / "firmware").save(fb.build_bundle(version=NEW))
    done = ota(svc, "--version", NEW, "--rooms", "R-0101,R-0201")
    assert done.returncode == 0, done.stdout + done.stderr + nodes[0].log() + nodes[1].log()
    assert (
        "ok R-0101 n-ro-1: updated" in done.stdout and "ok R-0201 n-ro-2: updated" in done.stdout
    ), done.stdout
    assert f"rollout of {NEW} done: 2 updated" in done.stdout
    for n in nodes:
        # Confirmed by the node itself once proven (ota_confirm_s, 8 s here):
        # the rollout reports the node running the new version before that.
        wait_for(
            lambda: (n.fw() or {}).get("state") == "ok",  # noqa: B023 (polled before the loop moves on)
            timeout=60,
            what="the update confirmed",
            detail=n.log,
        )
        fw = n.fw()
        assert fw is not None and fw["version"] == NEW, fw
    # Again: nothing to do, the nodes say they are on it already.
    again = ota(svc, "--version", NEW, "--building", "测试楼")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 updated, 2 already on it" in again.stdout, again.stdout


def test_a_rollout_stops_at_the_first_node_that_rolls_back(
    site: tuple[Services, list[UnixNode]], tmp_path: Path
) -> None:
    svc, nodes = site
    src = tmp_path / "broken-firmware"
    fb.write_tree(
        [fb.FirmwareFile(name, path.read_bytes()) for name, path in fb.module_sources()], src
    )
    (src / "app.py").write_text('raise RuntimeError("a broken release")\n')
    fb.FirmwareStore(svc.workdir / "data" / "firmware").save(fb.build_bundle(src, NEW))
    done = ota(svc, "--version", NEW, "--devices", "n-ro-1,n-ro-2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAILED R-0101 n-ro-1: rolled back: back on {OLD} (reset: rollback)" in done.stdout, (
        done.stdout + nodes[0].log()
    )
    assert "not attempted: R-0201" in done.stderr, done.stderr
    assert nodes[0].fw() == {"slot": "", "state": "ok", "version": OLD}
    assert nodes[1].fw() is None and "ota:" not in nodes[1].log()  # never asked


def test_a_rollout_refuses_to_start_without_a_served_bundle(
    site: tuple[Services, list[UnixNode]],
) -> None:
    svc, nodes = site
    done = ota(svc, "--version", "7.7.7", "--all")
    assert done.returncode == 1 and "404" in done.stderr, done.stderr
    assert all(n.fw() is None for n in nodes)
