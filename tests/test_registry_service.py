"""Registry edits are read and written under one lock: two admins editing
at once never lose each other's change (a move and a CSV import used to
read the registry before taking the lock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mamaroom.registry import read_rooms_csv
from server.db import ServerDb
from server.services.registry import RegistryService


def test_concurrent_edits_are_all_kept(tmp_path: Path, rooms_csv: Path) -> None:
    async def run() -> None:
        db = ServerDb(tmp_path / "server.sqlite")
        await db.open()
        registry = RegistryService(db, rooms_csv)
        await registry.load()
        # Each edit yields to the others while it writes: all run interleaved.
        await asyncio.gather(
            registry.patch_room("T1-0101", {"name_en": "East wing"}),
            registry.move_device("dev-b", "T1-0301"),
            registry.patch_room("T1-0201", {"cleaning": True}),
            registry.import_rooms(read_rooms_csv(rooms_csv), apply=False),
        )
        rooms = {r.id: r for r in registry.current.rooms}
        assert rooms["T1-0101"].name_en == "East wing"
        assert rooms["T1-0301"].device == "dev-b" and rooms["T1-0201"].device is None
        assert rooms["T1-0201"].cleaning
        # An import keeps what staff set by hand for rooms that stay.
        removed = await registry.import_rooms(read_rooms_csv(rooms_csv), apply=True)
        assert removed == []
        assert {r.id: r for r in registry.current.rooms}["T1-0201"].cleaning
        await db.close()

    asyncio.run(run())
