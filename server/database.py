"""The server's database, server.sqlite: one object owns the file, runs
every component's migrations in one place and hands each component its
connection.

Two connections, each with its own worker thread, not one per component:

- `calls`: the emergency-call path alone (alerts, the call journal's
  commits, escalation). `raise_call`/`raise_once`/`commit_journaled` take
  SQLite's write lock with BEGIN IMMEDIATE; on a thread of their own they
  never queue behind a slow trends query or a burst of logins.
- `web`: everything the pages and the admin use (registry, accounts, roster,
  Web Push, WeChat, the trends' call reads). None of it is urgent enough to
  need a thread of its own, and one thread serialises their short writes.

Every component keeps its own schema and version (`schema_versions`), so a
file of any earlier release migrates as before (tests/test_migrations.py).
"""

from __future__ import annotations

import contextlib

from mamaroom.config import Settings
from mamaroom.storage.sqlite_base import SqliteConnection, SqliteDatabase
from server.alerts_db import AlertsDb
from server.db import ServerDb
from server.services.accounts import AccountsDb
from server.services.roster import RosterDb
from server.services.trends import CallsDb
from server.services.webpush import PushDb
from server.services.wechat import WechatDb


class ServerDatabase:
    """server.sqlite and its components, opened and closed together."""

    def __init__(self, settings: Settings) -> None:
        path = settings.server_db_path
        self.calls = SqliteConnection(path)
        self.web = SqliteConnection(path)
        self.alerts = AlertsDb(path, connection=self.calls)
        self.registry = ServerDb(path, connection=self.web)
        self.accounts = AccountsDb(path, settings.auth, connection=self.web)
        self.roster = RosterDb(path, connection=self.web)
        self.push = PushDb(path, connection=self.web)
        self.wechat = WechatDb(path, connection=self.web)
        #: Reads the alerts' tables (migrated by `alerts`) off the call path.
        self.trend_calls = CallsDb(path, connection=self.web)

    def _components(self) -> list[SqliteDatabase]:
        """In the order they are migrated (the order the server opened them
        in when each had its own connection)."""
        return [self.registry, self.alerts, self.accounts, self.roster, self.push, self.wechat]

    async def open(self) -> None:
        """Open both connections and migrate every component; on a failure,
        close what was opened and raise."""
        try:
            await self.web.open()
            await self.calls.open()
            for component in self._components():
                await component.open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Every component's own parts (the accounts' hashing threads), then
        both connections, each even when an earlier one fails to close."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.calls.close)
            stack.push_async_callback(self.web.close)
            for component in self._components():
                stack.push_async_callback(component.close)
