"""Firmware bundles: built by mpy-cross, loadable by the real MicroPython,
served by the real server; the board's file set for provisioning."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mamaroom import firmware_bundle as fb
from tests.firmware.test_logic import micropython
from tests.support import ROOT, Mosquitto, Services


def mamaroom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_a_bundle_is_reproducible_and_holds_only_the_slot_modules() -> None:
    a = fb.build_bundle(version="2.0.0")
    b = fb.build_bundle(version="2.0.0")
    assert a.data == b.data and a.sha256 == b.sha256
    assert fb.build_bundle(version="2.0.1").sha256 != a.sha256
    names = [f.path for f in fb.read_bundle(a.data).files]
    assert "app.mpy" in names and "ota.mpy" in names and "board/unix.mpy" in names
    for never in ("main", "loader", "trial"):  # the board's own: they roll an update back
        assert not any(n.split(".")[0] == never for n in names), names
    assert "config.json" not in names  # each board's own, with its secrets
    assert all(n.endswith(".mpy") for n in names)
    manifest = json.loads(a.data.split(b"\n")[1])
    assert manifest["version"] == "2.0.0"
    with pytest.raises(fb.BundleError):
        fb.read_bundle(a.data[:-1])
    with pytest.raises(fb.BundleError):
        fb.check_version("../etc")


def test_the_bundle_loads_on_the_real_micropython_and_reports_its_version(tmp_path: Path) -> None:
    b = fb.build_bundle(version="3.1.4-rc1")
    fb.write_tree(list(b.files), tmp_path)
    out = subprocess.run(
        [
            micropython(),
            "-X",
            "heapsize=256K",
            "-c",
            "import sys; sys.path.insert(0, '.'); import version, ota, contract;"
            "m = sys.implementation._mpy; print(version.VERSION, m & 0xFF, m >> 8 & 3)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    version, mpy, sub = out.stdout.split()
    assert version == "3.1.4-rc1"
    # The manifest names the .mpy version this interpreter loads (the node checks it).
    assert json.loads(b.data.split(b"\n")[1])["mpy"] == [int(mpy), int(sub)]


def test_device_bundle_writes_the_bundle_and_its_sha256(tmp_path: Path) -> None:
    out = mamaroom("device", "bundle", "--version", "1.2.3", "--out", str(tmp_path / "b.bin"))
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "b.bin").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert (tmp_path / "b.bin.sha256").read_text() == f"{digest}  b.bin\n"
    assert digest in out.stdout and fb.read_bundle(data).version == "1.2.3"


def test_provision_out_writes_a_board_with_a_checked_config(tmp_path: Path) -> None:
    template = json.loads((fb.FIRMWARE_DIR / "config.example.json").read_text())
    template["broker"] = "mqtt://10.9.8.7:1883"
    (tmp_path / "site.json").write_text(json.dumps(template))
    board = tmp_path / "board"
    out = mamaroom(
        "device",
        "provision",
        "--device",
        "n-b7-0301",
        "--config",
        str(tmp_path / "site.json"),
        "--out",
        str(board),
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads((board / "config.json").read_text())
    assert cfg["device"] == "n-b7-0301" and cfg["broker"] == "mqtt://10.9.8.7:1883"
    assert (board / "main.py").read_bytes() == (fb.FIRMWARE_DIR / "main.py").read_bytes()
    assert (board / "loader.mpy").exists() and (board / "trial.mpy").exists()
    assert (board / "app.mpy").exists() and (board / "board" / "unix.mpy").exists()
    assert not list(board.rglob("*.py"))[1:]  # main.py is the only source

    # A config the board would refuse is refused here, with the board's words.
    template["broker"] = "http://10.9.8.7"
    (tmp_path / "bad.json").write_text(json.dumps(template))
    out = mamaroom(
        "device",
        "provision",
        "--device",
        "n-b7-0301",
        "--config",
        str(tmp_path / "bad.json"),
        "--dry-run",
    )
    assert out.returncode == 1 and "must start with mqtt://" in out.stderr, out.stderr
    out = mamaroom("device", "provision", "--device", "Bad_Id", "--dry-run")
    assert out.returncode == 2 and "not a device id" in out.stderr


def test_the_server_offers_bundles_to_nodes_without_login(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    svc = Services(broker, tmp_path, rooms_csv)
    made = mamaroom("device", "bundle", "--version", "1.4.0", env={**os.environ, **svc.env})
    assert made.returncode == 0, made.stderr
    data = (tmp_path / "data" / "firmware" / "1.4.0.bundle").read_bytes()
    svc.start_server()
    try:
        r = svc.http.get("/api/firmware/1.4.0.bundle")
        assert r.status_code == 200 and r.content == data
        assert int(r.headers["content-length"]) == len(data)
        r = svc.http.get("/api/firmware/1.4.0.sha256")
        assert r.status_code == 200 and r.text.strip() == hashlib.sha256(data).hexdigest()
        assert svc.http.get("/api/firmware/9.9.9.bundle").status_code == 404
        assert svc.http.get("/api/firmware/..%2Fserver.sqlite.bundle").status_code == 404
        assert svc.http.get("/api/firmware").status_code == 401  # the list is for staff
    finally:
        svc.stop()


class PtyBoard:
    """The MicroPython unix port's REPL on a pseudo-terminal, the way a board's
    REPL is on its USB serial port: mpremote opens `port`, a pty of its own,
    bridged byte for byte to the interpreter's (socat's job, in a thread).
    The interpreter's working folder is the board's flash."""

    def __init__(self, flash: Path) -> None:
        import pty
        import tty

        self.ours, theirs = pty.openpty()
        self.board, board_tty = pty.openpty()
        tty.setraw(board_tty)  # as a UART: no line discipline between the two
        self.port = os.ttyname(theirs)
        self._keep = theirs  # the port stays open for mpremote to open
        self.proc = subprocess.Popen(
            [micropython()],
            stdin=board_tty,
            stdout=board_tty,
            stderr=board_tty,
            cwd=flash,
            start_new_session=True,
        )
        os.close(board_tty)
        banner = b""
        while b">>> " not in banner:  # the board is up, at its prompt
            banner += os.read(self.board, 1024)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._bridge, daemon=True)
        self.thread.start()

    def _bridge(self) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([self.ours, self.board], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                os.write(self.board if fd == self.ours else self.ours, data)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.proc.kill()
        self.proc.wait()
        for fd in (self.ours, self.board, self._keep):
            os.close(fd)


def test_provision_copies_the_firmware_onto_a_board_over_serial(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    # An older firmware's leftovers: a source module that would shadow app.mpy,
    # an OTA pointer that would start a slot instead of what is copied now.
    (flash / "app.py").write_text("print('old firmware')\n")
    (flash / "var").mkdir()
    (flash / "var" / "fw.json").write_text('{"slot": "ota/a", "state": "ok"}')
    (flash / "var" / "boot.json").write_text('{"boot": 41}')
    # Loopback only: the example's broker and NTP server are site addresses.
    template = {
        **json.loads((fb.FIRMWARE_DIR / "config.example.json").read_text()),
        "broker": "mqtt://127.0.0.1:9",
        "ntp": "",
    }
    (tmp_path / "site.json").write_text(json.dumps(template))
    board = PtyBoard(flash)
    try:
        out = mamaroom(
            "device",
            "provision",
            "--device",
            "n-pty-0101",
            "--port",
            board.port,
            "--config",
            str(tmp_path / "site.json"),
        )
    finally:
        board.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "n-pty-0101 provisioned" in out.stdout, out.stdout
    assert "app.py" in out.stdout and "var/fw.json" in out.stdout  # said what it removed
    for f in fb.board_files():
        assert (flash / f.path).read_bytes() == f.data, f.path
    assert json.loads((flash / "config.json").read_text())["device"] == "n-pty-0101"
    assert not (flash / "app.py").exists() and not (flash / "var" / "fw.json").exists()
    assert json.loads((flash / "var" / "boot.json").read_text()) == {"boot": 41}  # kept
    # What was copied boots: the node starts as n-pty-0101, on its 42nd boot.
    node = subprocess.Popen(
        [micropython(), "-X", "heapsize=256K", "main.py"],
        cwd=flash,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert node.stdout is not None
        first = node.stdout.readline()
        assert "node n-pty-0101 fw 1.0.0 boot 42" in first, first
    finally:
        node.kill()
        node.wait()
