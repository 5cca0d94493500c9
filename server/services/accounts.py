"""Staff accounts, roles and bearer tokens.

Passwords are hashed with argon2id (argon2-cffi). Tokens are random, stored
only as their SHA-256, and expire after a shift. Logins are rate-limited per
user name and per client address. Roles are ordered: admin ⊃ manager ⊃ staff.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mamaroom.storage.sqlite_base import SqliteDatabase

Role = Literal["staff", "manager", "admin"]
RANK: dict[str, int] = {"staff": 1, "manager": 2, "admin": 3}
TOKEN_TTL_S = 12 * 3600  # one shift
NAME_PATTERN = r"^[A-Za-z0-9._-]{2,64}$"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    expires_ms INTEGER NOT NULL
);
"""

_hasher = PasswordHasher()


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    def has(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


class AccountError(Exception):
    """A login or account request that cannot be granted (message is safe to show)."""


class AccountsDb(SqliteDatabase):
    schema = SCHEMA

    async def add_user(self, name: str, role: Role, password: str) -> None:
        if len(password) < 10:
            raise AccountError("passwords need at least 10 characters")
        hashed = _hasher.hash(password)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT INTO users (name, role, password_hash, created_ms)"
                           " VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                           " role=excluded.role, password_hash=excluded.password_hash,"
                           " disabled=0", (name, role, hashed, int(time.time() * 1000)))
                db.execute("DELETE FROM tokens WHERE user=?", (name,))  # new password: log out

        await self._run(run)

    async def disable(self, name: str) -> bool:
        """Disable an account and end its sessions; False if there is none."""

        def run(db: sqlite3.Connection) -> bool:
            with db:
                cur = db.execute("UPDATE users SET disabled=1 WHERE name=?", (name,))
                db.execute("DELETE FROM tokens WHERE user=?", (name,))
                return cur.rowcount == 1

        return await self._run(run)

    async def users(self) -> list[tuple[str, str, bool]]:
        return await self._run(lambda db: [
            (n, r, bool(d)) for n, r, d in db.execute(
                "SELECT name, role, disabled FROM users ORDER BY name")])

    async def check_password(self, name: str, password: str) -> User | None:
        row = await self._run(lambda db: db.execute(
            "SELECT role, password_hash FROM users WHERE name=? AND disabled=0",
            (name,)).fetchone())
        if row is None:
            _hasher.hash(password)  # same cost either way: no user-name oracle
            return None
        try:
            _hasher.verify(row[1], password)
        except (VerificationError, InvalidHashError):
            return None
        return User(name, row[0])

    async def issue_token(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        expires = int((time.time() + TOKEN_TTL_S) * 1000)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM tokens WHERE expires_ms < ?", (int(time.time() * 1000),))
                db.execute("INSERT INTO tokens VALUES (?, ?, ?)",
                           (_digest(token), user.name, expires))

        await self._run(run)
        return token

    async def revoke(self, token: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM tokens WHERE token_sha256=?", (_digest(token),))

        await self._run(run)

    async def user_for_token(self, token: str) -> User | None:
        row = await self._run(lambda db: db.execute(
            "SELECT u.name, u.role FROM tokens t JOIN users u ON u.name = t.user"
            " WHERE t.token_sha256=? AND t.expires_ms > ? AND u.disabled=0",
            (_digest(token), int(time.time() * 1000))).fetchone())
        return User(row[0], row[1]) if row else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginLimiter:
    """At most `attempts` failed logins per user name and per address in
    `window_s`; further attempts are refused until the window passes."""

    def __init__(self, attempts: int = 5, window_s: float = 300) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        q = self._failures[key]
        while q and q[0] < time.monotonic() - self.window_s:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(k)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        for k in keys:
            self._recent(k).append(time.monotonic())

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._failures.pop(k, None)
