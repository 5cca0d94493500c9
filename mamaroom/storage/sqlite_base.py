"""A SQLite database driven from asyncio: every call runs on one worker thread,
so the connection never crosses threads, writes are serialised, and the event
loop never waits on the disk."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from mamaroom.storage import RefusedError, StorageError
from mamaroom.storage.migrations import Migration, MigrationError, upgrade

T = TypeVar("T")
#: How long opening a database waits for another process's lock.
BUSY_TIMEOUT_S = 10.0
_REFUSALS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
)


class SqliteConnection:
    """One sqlite3 connection and the one worker thread that drives it. A
    database object owns one of its own, or several share one (the server's
    web-side components: server/database.py); calls on one connection queue
    behind each other, calls on two do not."""

    def __init__(self, path: Path, *, checkpoint_pages: int = 1000) -> None:
        self.path = path
        #: WAL pages after which a commit also checkpoints (SQLite's default: 1000).
        self.checkpoint_pages = checkpoint_pages
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StorageError(f"{self.path}: database is not open")
            try:
                return fn(self._db)
            except _REFUSALS as exc:
                # The data, not the database: a value SQLite cannot hold (an
                # integer over 64 bits), a constraint. Retrying cannot help.
                raise RefusedError(f"{self.path}: {type(exc).__name__}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self, setup: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Connect, then `setup` (a component's migrations) in the same step."""

        def connect() -> None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
                _switch_to_wal(db)
                # NORMAL in WAL mode survives a process crash; only an OS crash
                # can lose the last transactions.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA wal_autocheckpoint={int(self.checkpoint_pages)}")
                # Keep the WAL file no bigger than about twice that after a checkpoint.
                db.execute(f"PRAGMA journal_size_limit={int(self.checkpoint_pages) * 8192}")
                if setup is not None:
                    setup(db)
                db.commit()
            except MigrationError as exc:
                raise StorageError(str(exc)) from exc
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(f"{self.path}: {exc}") from exc
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    async def setup(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Run `setup` (another component's migrations) on the open connection."""

        def run() -> None:
            if self._db is None:
                raise StorageError(f"{self.path}: database is not open")
            try:
                setup(self._db)
                self._db.commit()
            except (MigrationError, sqlite3.Error) as exc:
                # Shared: leave nothing half-done for the next component.
                self._db.rollback()
                if isinstance(exc, MigrationError):
                    raise StorageError(str(exc)) from exc
                raise StorageError(f"{self.path}: {exc}") from exc

        await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown(wait=True)


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode=WAL`, waiting out another connection's switch.

    When two processes open a new file at once (two servers starting
    together, or the server and the gateway on store.sqlite), SQLite answers
    one of them "database is locked" at once, without its busy timeout, and
    that process would fail to start. Found by
    test_two_servers_raising_the_same_call_at_once_make_one_alert (one run in
    four: one of its two servers never opened)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)  # on the database's own thread, never the event loop
        delay = min(delay * 2, 0.2)


class SqliteDatabase:
    """One component's tables in a SQLite file: its schema, its migrations
    and its queries. It opens a connection of its own unless given one to
    share, which its owner opens and closes."""

    #: The current schema, `CREATE ... IF NOT EXISTS` statements: what a new
    #: file gets (migrations.py).
    schema = ""
    #: Versioned changes since the first versioned release (version 1); a
    #: change to `schema` comes with one (mamaroom/storage/migrations.py).
    migrations: tuple[Migration, ...] = ()
    #: The name its version is kept under; several share one file.
    component = ""
    #: WAL pages after which a commit also checkpoints (SQLite's default: 1000).
    checkpoint_pages = 1000

    def __init__(self, path: Path, *, connection: SqliteConnection | None = None) -> None:
        if not self.component:
            raise TypeError(f"{type(self).__name__} needs a `component` name")
        self.path = path
        self._owned = connection is None
        self.connection = connection or SqliteConnection(
            path, checkpoint_pages=self.checkpoint_pages
        )

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.connection.run(fn)

    async def open(self) -> None:
        """Open its own connection, or migrate on the shared one (already open)."""
        if self._owned:
            await self.connection.open(self._upgrade_schema)
        else:
            await self.connection.setup(self._upgrade_schema)

    def _upgrade_schema(self, db: sqlite3.Connection) -> None:
        upgrade(
            db,
            path=str(self.path),
            component=self.component,
            schema=self.schema,
            migrations=self.migrations,
            legacy=self.migrate,
        )

    def migrate(self, db: sqlite3.Connection) -> None:
        """The fix-ups releases before versioning made on open (columns they
        added), for a file without a version: it is then version 1."""

    async def close(self) -> None:
        """Close its own connection; a shared one is its owner's to close."""
        if self._owned:
            await self.connection.close()

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())
