"""Copy a node's files onto a board over USB serial, with mpremote's library
(its raw-REPL transport: what `mpremote cp` does, file by file with progress,
each file's sha256 checked on the board afterwards)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from mamaroom.firmware_bundle import FirmwareFile

#: Left alone on the board: MicroPython's own boot.py, the node's state (var/,
#: except the OTA pointer), and the OTA slots (unused once var/fw.json is gone).
MODULE_EXTS = (".py", ".mpy")


#: A node already running the firmware has started the hardware watchdog
#: (board/esp32.py, 8 s), which neither Ctrl-C nor a soft reset stops: it is
#: fed from a timer while the files are copied. (Not checkable without a
#: board; on a port without these it does nothing.)
FEED_WATCHDOG = (
    "try:\n import machine\n _w = machine.WDT(timeout=8000)\n"
    " _t = machine.Timer(0)\n _t.init(period=1000, callback=lambda t: _w.feed())\n"
    "except Exception:\n pass\n"
)


class ProvisionError(Exception):
    pass


def copy_to_board(
    port: str, files: list[FirmwareFile], progress: Callable[[str, int], None]
) -> list[str]:
    """Copy `files` into the board's root; returns the stale files removed."""
    from mpremote.transport import (  # type: ignore[import-untyped]
        TransportError,
        TransportExecError,
    )
    from mpremote.transport_serial import SerialTransport  # type: ignore[import-untyped]

    try:
        board = SerialTransport(port, baudrate=115200)
    except TransportError as exc:
        raise ProvisionError(f"{port}: {exc}") from None
    try:
        # A pty is an emulator (QEMU, the unix port): it has no soft reset.
        board.enter_raw_repl(soft_reset=not board.is_pty)
        board.exec(FEED_WATCHDOG)
        removed = _remove_stale(board, files)
        done = 0
        # main.py last: a copy cut short leaves a board that does not start a half image.
        for f in sorted(files, key=lambda f: f.path == "main.py"):
            folder = f.path.rpartition("/")[0]
            if folder and not board.fs_isdir(folder):
                board.fs_mkdir(folder)
            board.fs_writefile(
                f.path,
                f.data,
                chunk_size=256,
                progress_callback=lambda n, _t, base=done, p=f.path: progress(p, base + n),
            )
            got = board.fs_hashfile(f.path, "sha256")
            if got != hashlib.sha256(f.data).digest():
                raise ProvisionError(f"{f.path}: the board holds something else than was sent")
            done += len(f.data)
        board.exit_raw_repl()
        return removed
    except (TransportError, TransportExecError, OSError) as exc:
        raise ProvisionError(f"{port}: {exc}") from None
    finally:
        board.close()


def _remove_stale(board: Any, files: list[FirmwareFile]) -> list[str]:
    """Modules of an older firmware that would shadow the new ones (a .py is
    imported before an .mpy of the same name), and var/fw.json (so the board
    starts on the files copied now, not on an OTA slot)."""
    keep = {f.path for f in files} | {"boot.py"}
    removed = []
    folders = ["", *sorted({f.path.rpartition("/")[0] for f in files} - {""})]
    for folder in folders:
        if folder and not board.fs_isdir(folder):
            continue
        for entry in board.fs_listdir(folder):
            path = f"{folder}/{entry.name}" if folder else entry.name
            if entry.st_mode & 0x4000 or not path.endswith(MODULE_EXTS) or path in keep:
                continue
            board.fs_rmfile(path)
            removed.append(path)
    if board.fs_exists("var/fw.json"):
        board.fs_rmfile("var/fw.json")
        removed.append("var/fw.json")
    return removed
