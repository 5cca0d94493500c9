"""Versioned schema migrations for every SQLite file.

One file can hold several components' tables (server.sqlite holds the room
registry, alerts, accounts, push subscriptions and the roster), so each
component keeps its own version, in the file's `schema_versions` table, not
in SQLite's single `user_version`.

On open, a component's database is brought to its latest version:

- a **new** file (none of the component's tables exist) gets the current
  schema and is marked at the latest version: nothing to replay;
- a file from **before versioning** (the tables exist, no version row) is
  version 1, after the ad-hoc column additions those releases made on open
  (`SqliteDatabase.migrate`);
- then every migration above the file's version runs in order, each in its
  own transaction together with the new version number, and is logged;
- a file **newer** than this release knows is refused with a clear error
  (a downgrade would silently drop what the newer schema holds).

Adding a column or table: append a `Migration` to the component's
`migrations` with the next number, and change its `schema` to match (the
schema is what a new file gets, and it runs after the steps). A new table is
created by its migration too, so that later steps can alter it. Never edit a
released migration.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mamaroom.logs import get_logger

log = get_logger(__name__)

VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component  TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
"""
_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", re.IGNORECASE)


class MigrationError(Exception):
    """The file cannot be brought to this release's schema."""


@dataclass(frozen=True)
class Migration:
    """Schema version `version` of a component: what it changes and how."""

    version: int
    what: str
    apply: Callable[[sqlite3.Connection], None]


def sql(statements: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step made of SQL statements (run inside its transaction)."""

    def run(db: sqlite3.Connection) -> None:
        for statement in statements.split(";"):
            if statement.strip():
                db.execute(statement)

    return run


def add_column(table: str, column: str, decl: str) -> Callable[[sqlite3.Connection], None]:
    """ALTER TABLE … ADD COLUMN, unless the column is there already (SQLite
    has no IF NOT EXISTS for columns)."""

    def run(db: sqlite3.Connection) -> None:
        if column not in {r[1] for r in db.execute(f'PRAGMA table_info("{table}")')}:
            db.execute(f'ALTER TABLE "{table}" ADD COLUMN {column} {decl}')

    return run


def tables_of(schema: str) -> list[str]:
    return _TABLE.findall(schema)


def latest(migrations: Sequence[Migration]) -> int:
    return max((m.version for m in migrations), default=1)


def version_of(db: sqlite3.Connection, component: str) -> int | None:
    """The component's recorded version; None before versioning."""
    db.executescript(VERSIONS_TABLE)
    row = db.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    return None if row is None else int(row[0])


def _record(db: sqlite3.Connection, component: str, version: int) -> None:
    db.execute(
        "INSERT INTO schema_versions (component, version, updated_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (component) DO UPDATE SET version = excluded.version,"
        " updated_ms = excluded.updated_ms",
        (component, version, int(time.time() * 1000)),
    )


def upgrade(
    db: sqlite3.Connection,
    *,
    path: str,
    component: str,
    schema: str,
    migrations: Sequence[Migration],
    legacy: Callable[[sqlite3.Connection], None],
) -> int:
    """Bring `component` in `db` to its latest version; returns that version.
    `legacy` is the pre-versioning fix-up (column additions made on open)."""
    steps = sorted(migrations, key=lambda m: m.version)
    if [m.version for m in steps] != list(range(2, 2 + len(steps))):
        raise MigrationError(f"{component}: migrations must be numbered 2, 3, … without gaps")
    newest = latest(steps)
    version = version_of(db, component)
    if version is None:
        names = tables_of(schema)
        existing = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not any(n in existing for n in names):
            db.executescript(schema)
            _record(db, component, newest)
            db.commit()
            return newest
        version = 1  # written by a release before versioning
        log.info("schema versioning starts", file=path, component=component, version=1)
    if version > newest:
        raise MigrationError(
            f"{path}: {component} has schema version {version}, but this release knows "
            f"only up to {newest}: it was written by a newer mamaroom. Run that release, "
            "or restore a backup made by this one"
        )
    if version == 1:
        # The fix-ups of before versioning skip a table the file does not
        # have yet; the full schema at the end makes it whole.
        legacy(db)
    for step in steps:
        if step.version <= version:
            continue
        try:
            with db:
                step.apply(db)
                _record(db, component, step.version)
        except sqlite3.Error as exc:
            raise MigrationError(
                f"{path}: {component} migration {step.version} ({step.what}) failed: {exc}"
            ) from exc
        log.info(
            "schema migrated",
            file=path,
            component=component,
            version=step.version,
            change=step.what,
        )
        version = step.version
    # Then the current schema's CREATE … IF NOT EXISTS: a no-op for what the
    # steps built, and the tables and indexes of a pre-versioning file's era.
    db.executescript(schema)
    with db:
        _record(db, component, version)
    return version
