"""Schema migrations (mamaroom/storage/migrations.py).

The fixtures in tests/fixtures/ were written through the real server,
gateway and CLI of earlier releases (make_previous_release.py; the commit is
in each manifest): previous-release/ by the release before versioning
existed, release-2026-12-07/ by the last release that kept time series and
device state as one component. This release must open each with every row
kept and carry on: the open call is still open, the admin can still log in,
the rooms are still there."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from mamaroom.storage import StorageError
from mamaroom.storage.migrations import Migration, add_column, sql
from mamaroom.storage.sqlite_base import SqliteDatabase
from tests.support import Device, Mosquitto, Services, wait_for, write_rooms_csv

FIXTURES = Path(__file__).parent / "fixtures"


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: db.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        db.close()


def versions(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT component, version FROM schema_versions").fetchall())
    finally:
        db.close()


@pytest.mark.parametrize("release", ["previous-release", "release-2026-12-07"])
def test_a_previous_release_opens_with_every_row_kept(
    broker: Mosquitto, tmp_path: Path, release: str
) -> None:
    fixture = FIXTURES / release
    manifest = json.loads((fixture / "manifest.json").read_text())
    data = tmp_path / "data"
    data.mkdir()
    for name in manifest["files"]:
        shutil.copy(fixture / name, data / name)
    rooms = write_rooms_csv(tmp_path / "rooms.csv", [("B-0101", "node-1"), ("B-0102", "node-2")])
    svc = Services(broker, tmp_path, rooms).start()
    try:
        # The open call from the old release is still open, and can be resolved.
        open_calls = svc.admin("GET", "/api/alerts", params={"status": "open"}).json()
        assert [a["room"] for a in open_calls if a["kind"] == "call"] == ["B-0102"], open_calls
        resolved = svc.admin("GET", "/api/alerts", params={"status": "resolved"}).json()
        assert any(a["kind"] == "call" and a["room"] == "B-0101" for a in resolved), resolved
        roster = svc.admin("GET", "/api/admin/roster").json()
        assert roster["source"] == "admin" and roster["shifts"][0]["name"] == "Wang"
        two = Device(broker.port, "node-2")
        two.call("reset", "c-open")
        wait_for(lambda: "resolved" in two.statuses("c-open"), what="the old call resolved")
        two.close()
    finally:
        svc.stop()
    for name, before in manifest["files"].items():
        after = counts(data / name)
        lost = {t: (n, after.get(t, 0)) for t, n in before.items() if after.get(t, 0) < n}
        assert not lost, f"{name}: rows lost (before, after): {lost}"
        assert "schema_versions" in after, name
    assert versions(data / "server.sqlite").keys() >= {
        "registry",
        "alerts",
        "accounts",
        "push",
        "roster",
    }
    # Time series, device state and dead letters: one component each.
    assert versions(data / "store.sqlite").keys() >= {"store", "devices", "dead_letters"}


class Toy(SqliteDatabase):
    component = "toy"
    schema = """CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL,
                                                   lang TEXT NOT NULL DEFAULT 'zh');
                CREATE INDEX IF NOT EXISTS notes_lang ON notes (lang);"""
    migrations = (
        Migration(
            2, "notes get a language", add_column("notes", "lang", "TEXT NOT NULL DEFAULT 'zh'")
        ),
        Migration(
            3, "an index on it", sql("CREATE INDEX IF NOT EXISTS notes_lang ON notes (lang)")
        ),
    )


def make_v1(path: Path, *, versioned: bool) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    db.executemany("INSERT INTO notes (body) VALUES (?)", [("a",), ("b",)])
    if versioned:
        db.execute(
            "CREATE TABLE schema_versions (component TEXT PRIMARY KEY, "
            "version INTEGER NOT NULL, updated_ms INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO schema_versions VALUES ('toy', 1, 0)")
    db.commit()
    db.close()


@pytest.mark.parametrize("versioned", [True, False], ids=["version-1", "before-versioning"])
def test_an_old_file_is_migrated_step_by_step(tmp_path: Path, versioned: bool) -> None:
    path = tmp_path / "toy.sqlite"
    make_v1(path, versioned=versioned)

    async def go() -> None:
        toy = Toy(path)
        await toy.open()
        await toy.close()

    asyncio.run(go())
    db = sqlite3.connect(path)
    assert db.execute("SELECT body, lang FROM notes ORDER BY id").fetchall() == [
        ("a", "zh"),
        ("b", "zh"),
    ]
    assert db.execute("SELECT name FROM sqlite_master WHERE name='notes_lang'").fetchone()
    db.close()
    assert versions(path) == {"toy": 3}


def test_a_new_file_starts_at_the_latest_version(tmp_path: Path) -> None:
    async def go() -> None:
        toy = Toy(tmp_path / "new.sqlite")
        await toy.open()
        await toy.close()

    asyncio.run(go())
    assert versions(tmp_path / "new.sqlite") == {"toy": 3}


def test_a_file_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "toy.sqlite"
    make_v1(path, versioned=True)
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_versions SET version = 9")
    db.commit()
    db.close()

    async def go() -> None:
        await Toy(path).open()

    with pytest.raises(StorageError, match=r"schema version 9.*only up to 3.*newer mamaroom"):
        asyncio.run(go())
    assert versions(path) == {"toy": 9}


def test_a_failing_migration_keeps_the_file_at_its_last_good_version(tmp_path: Path) -> None:
    class Broken(Toy):
        migrations = (
            Toy.migrations[0],
            Migration(3, "a bad step", sql("CREATE INDEX x ON no_such_table (y)")),
        )

    path = tmp_path / "toy.sqlite"
    make_v1(path, versioned=True)

    async def go() -> None:
        await Broken(path).open()

    with pytest.raises(StorageError, match=r"migration 3 \(a bad step\) failed"):
        asyncio.run(go())
    assert versions(path) == {"toy": 2}
