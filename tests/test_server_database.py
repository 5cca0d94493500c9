"""server.sqlite through one ServerDatabase (server/database.py): every
component migrated in one place, two connections, and the call path's own
worker thread never waits behind the web side's."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from mamaroom.config import Settings
from server.database import ServerDatabase


def test_one_object_two_connections_every_component_versioned(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    async def go() -> None:
        database = ServerDatabase(settings)
        await database.open()
        try:
            web = database.web
            assert database.alerts.connection is database.calls
            for part in (
                database.registry,
                database.accounts,
                database.roster,
                database.push,
                database.wechat,
                database.trend_calls,
            ):
                assert part.connection is web, part

            # The web side's thread held up: a call still commits at once.
            release = threading.Event()
            held = asyncio.ensure_future(web.run(lambda _db: release.wait(10)))
            alert, created = await asyncio.wait_for(
                database.alerts.raise_call(
                    room="B-0101",
                    device="node-1",
                    call_id="c-1",
                    at_ms=1_000,
                    channel="button",
                    test=False,
                ),
                timeout=5,
            )
            assert created and alert["room"] == "B-0101"
            release.set()
            await held
            assert await database.trend_calls.call_times(0, 10_000)
        finally:
            await database.close()

    asyncio.run(go())
    db = sqlite3.connect(settings.server_db_path)
    try:
        versions = dict(db.execute("SELECT component, version FROM schema_versions").fetchall())
    finally:
        db.close()
    assert versions.keys() == {"registry", "alerts", "accounts", "roster", "push", "wechat"}
