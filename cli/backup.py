"""Backup and restore of the embedded databases in data_dir.

`backup` uses SQLite's online backup API: a consistent copy of each database
while the gateway and server keep writing (a plain file copy of a database in
WAL mode can be torn or miss the WAL). Each copy is checked with
`PRAGMA integrity_check` and listed in a manifest.

`restore` checks the backup first, keeps the current files aside in
data_dir/before-restore-<time>/, then writes the backup into place. It wants
the services stopped, and refuses while another process has a database open.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

#: The databases in data_dir (docs/configuration.md, "Files in data_dir").
DATABASES = ("server.sqlite", "store.sqlite", "influx-spool.sqlite")
MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why."""


@dataclass(frozen=True)
class Copied:
    name: str
    bytes: int


def _copy(src: Path, dst: Path) -> None:
    """SQLite online backup of `src` into a new file `dst`, then checked."""
    # Read-write open (only read from): a read-only one cannot join a WAL
    # database whose -shm it would have to create.
    source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            # In steps, so a busy writer is held up for moments, not the whole copy.
            source.backup(target, pages=4096)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            _check(target, dst)
        finally:
            target.close()
    finally:
        source.close()


def _check(db: sqlite3.Connection, path: Path) -> None:
    result = db.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{path}: integrity check failed: {result}")


def backup(data_dir: Path, dest: Path, *, now: dt.datetime | None = None) -> Path:
    """Copy every database of data_dir into a new folder under `dest`; return it."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    found = [name for name in DATABASES if (data_dir / name).exists()]
    if not found:
        raise BackupError(f"no database in {data_dir} (is data_dir right?)")
    folder = dest / f"mamaroom-{stamp}"
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise BackupError(f"{folder} exists already") from None
    copied = []
    for name in found:
        _copy(data_dir / name, folder / name)
        copied.append({"file": name, "bytes": (folder / name).stat().st_size})
    (folder / MANIFEST).write_text(
        json.dumps(
            {
                "created": (now or dt.datetime.now()).isoformat(timespec="seconds"),
                "data_dir": str(data_dir.resolve()),
                "files": copied,
            },
            indent=2,
        )
        + "\n"
    )
    return folder


def _in_use(db: Path) -> bool:
    """Whether another process has `db` open: in WAL mode every open
    connection holds a shared lock, so an exclusive one is refused."""
    if not db.exists():
        return False
    con = sqlite3.connect(db, timeout=0.5)
    try:
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        con.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        con.close()


def restore(source: Path, data_dir: Path, *, now: dt.datetime | None = None) -> list[str]:
    """Put the backup in `source` into data_dir; return the restored file names."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
        names = [entry["file"] for entry in manifest["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(
            f"{source} is not a mamaroom backup (no usable {MANIFEST}): {exc}"
        ) from None
    for name in names:
        if name not in DATABASES:
            raise BackupError(f"{source}/{MANIFEST} names an unknown file {name!r}")
        db = sqlite3.connect(f"file:{source / name}?mode=ro", uri=True)
        try:
            _check(db, source / name)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{source / name}: {exc}") from None
        finally:
            db.close()
    in_use = [name for name in DATABASES if _in_use(data_dir / name)]
    if in_use:
        raise BackupError(
            f"{', '.join(in_use)} in {data_dir} is open in another process: "
            "stop the gateway and the server first"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    aside = data_dir / f"before-restore-{stamp}"
    for name in DATABASES:  # all of them: a restored set must not mix with newer files
        for suffix in ("", "-wal", "-shm"):
            current = data_dir / f"{name}{suffix}"
            if current.exists():
                aside.mkdir(exist_ok=True)
                shutil.move(current, aside / current.name)
    for name in names:
        _copy(source / name, data_dir / name)
    return names
