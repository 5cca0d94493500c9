"""Staff accounts, roles and bearer tokens.

Passwords are hashed with argon2id (argon2-cffi) in a small pool of low-priority
threads, never on the event loop: the emergency-call path shares that loop.
Tokens are random, stored only as their SHA-256, and expire after a shift.
Failed logins slow the client address and the user down (LoginLimiter); a
password must pass `password_problem`. Roles are ordered: admin ⊃ manager ⊃ staff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mamaroom.config import AuthSettings
from mamaroom.logs import get_logger
from mamaroom.said import Said
from mamaroom.storage.sqlite_base import SqliteConnection, SqliteDatabase
from server.connections import LogSummary

T = TypeVar("T")
log = get_logger(__name__)

Role = Literal["staff", "manager", "admin"]
RANK: dict[str, int] = {"staff": 1, "manager": 2, "admin": 3}
TOKEN_TTL_S = 12 * 3600  # one shift

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


class PasswordPolicyError(AccountError):
    """A password the policy refuses; the message says which rule."""

    def __init__(self, said: Said) -> None:
        super().__init__(said.en)
        self.said = said


#: Passwords shorter than this need not be looked up: the length rule refuses them.
_DENYLIST_FROM = 8
#: A password needs this many different characters ("          " and
#: "1212121212" are long but guessed at once).
MIN_DISTINCT = 5


@cache
def _common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of zxcvbn's list (from leaked password
    sets), those long enough to matter. Loaded once, on first use."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.casefold() for p in FREQUENCY_LISTS["passwords"] if len(p) >= _DENYLIST_FROM)


def password_problem(name: str, password: str, min_length: int = 10) -> Said | None:
    """Why `password` may not be `name`'s password, or None if it may.

    The rules: at least `min_length` characters once the user's name is taken
    out of it (so neither the name nor name+"1234" passes), at least
    MIN_DISTINCT different characters, and not one of the common passwords."""
    folded = password.casefold()
    without_name = folded.replace(name.casefold(), "") if name else folded
    if len(password.strip()) < min_length:
        return Said(
            f"passwords need at least {min_length} characters",
            f"密码至少需要 {min_length} 个字符",
        )
    if len(without_name.strip()) < min_length:
        return Said(
            f"the password must not be the user's name: it needs {min_length} "
            "characters besides the name",
            f"密码不能是用户名：除用户名外还需要 {min_length} 个字符",
        )
    if len(set(folded)) < MIN_DISTINCT:
        return Said(
            f"the password needs at least {MIN_DISTINCT} different characters",
            f"密码至少需要 {MIN_DISTINCT} 个不同的字符",
        )
    if folded in _common_passwords() or folded.strip() in _common_passwords():
        return Said(
            "this is one of the most common passwords; choose another",
            "这是最常见的密码之一，请换一个",
        )
    return None


def _lower_priority() -> None:
    """Hashing threads yield the CPU to the event loop and the rest of the call
    path (broker, gateway): nice 19 (on Linux nice is per thread, and threads
    argon2 starts inherit it). A busy machine then slows logins (the login cap
    answers the excess with 503), not calls. Not SCHED_IDLE: on a machine kept
    busy, that stopped logins altogether (bench/login_storm.py: 0 checked)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class AccountsDb(SqliteDatabase):
    component = "accounts"
    schema = SCHEMA

    def __init__(
        self,
        path: Path,
        auth: AuthSettings | None = None,
        *,
        connection: SqliteConnection | None = None,
    ) -> None:
        super().__init__(path, connection=connection)
        self.auth = auth or AuthSettings()
        # argon2-cffi releases the GIL while it hashes, so threads run beside
        # the event loop; each hash takes 0.1-0.2 s of CPU and 64 MiB, so few.
        self._hashing = ThreadPoolExecutor(
            max_workers=self.auth.hash_workers,
            thread_name_prefix="argon2",
            initializer=_lower_priority,
        )

    async def _hash(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._hashing, fn)

    async def close(self) -> None:
        await super().close()
        self._hashing.shutdown(wait=True)

    async def add_user(self, name: str, role: Role, password: str) -> None:
        problem = password_problem(name, password, self.auth.min_passphrase_length)
        if problem:
            raise PasswordPolicyError(problem)
        hashed = await self._hash(lambda: _hasher.hash(password))

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO users (name, role, password_hash, created_ms)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                    " role=excluded.role, password_hash=excluded.password_hash,"
                    " disabled=0",
                    (name, role, hashed, int(time.time() * 1000)),
                )
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
        return await self._run(
            lambda db: [
                (n, r, bool(d))
                for n, r, d in db.execute("SELECT name, role, disabled FROM users ORDER BY name")
            ]
        )

    async def check_password(self, name: str, password: str) -> User | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT role, password_hash FROM users WHERE name=? AND disabled=0", (name,)
            ).fetchone()
        )
        if row is None:
            await self._hash(lambda: _hasher.hash(password))  # same cost: no name oracle
            return None

        def verify() -> bool:
            try:
                return _hasher.verify(row[1], password)
            except (VerificationError, InvalidHashError):
                return False

        return User(name, row[0]) if await self._hash(verify) else None

    async def issue_token(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        expires = int((time.time() + TOKEN_TTL_S) * 1000)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM tokens WHERE expires_ms < ?", (int(time.time() * 1000),))
                db.execute(
                    "INSERT INTO tokens VALUES (?, ?, ?)", (_digest(token), user.name, expires)
                )

        await self._run(run)
        return token

    async def revoke(self, token: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM tokens WHERE token_sha256=?", (_digest(token),))

        await self._run(run)

    async def user_for_token(self, token: str) -> User | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT u.name, u.role FROM tokens t JOIN users u ON u.name = t.user"
                " WHERE t.token_sha256=? AND t.expires_ms > ? AND u.disabled=0",
                (_digest(token), int(time.time() * 1000)),
            ).fetchone()
        )
        return User(row[0], row[1]) if row else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


BUSY = "too many logins at once; try again in a moment"


def _delayed(wait: float) -> str:
    return f"too many failed logins; try again in {math.ceil(wait)} s"


class LoginRefused(Exception):
    """A login not checked at all: too many at once (503), or too soon after
    failures (429). `retry_after_s` is for the Retry-After header."""

    def __init__(self, status: int, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class _Failures:
    count: int = 0
    last: float = -math.inf
    #: Attempts admitted and still being checked: they count as failures
    #: until they end, so concurrent tries cannot slip past the limit.
    pending: int = 0


@dataclass
class LoginTicket:
    """One admitted login attempt; end it with LoginLimiter.failed/succeeded/abandon."""

    keys: tuple[str, ...]
    ended: bool = field(default=False)


class LoginLimiter:
    """Which login attempts get their password checked.

    - At most `auth.max_concurrent_logins` are checked at once; more are
      refused with 503 at once, before any hashing.
    - Failures are counted per client address and per user name. The first
      `auth.free_attempts` cost nothing; after that each attempt must wait
      `backoff_base_s * 2**(failures - free_attempts)` (at most `backoff_max_s`)
      after the last failure, and attempts that come sooner are refused with
      429 without being checked or counted. Nothing is ever locked out: the
      right password gets in at the first try after the delay.
    - The user-name delay does not apply to an address with no recent
      failures, so an attacker failing as `admin` from one address never delays
      the real admin logging in from another.
    - Counters are kept until `failure_window_s` passes without a failure.

    `admit` is synchronous: the slot is taken before the caller's first await,
    so 200 concurrent tries see the same count as 200 sequential ones."""

    def __init__(
        self, auth: AuthSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.auth = auth or AuthSettings()
        self.clock = clock
        self.in_flight = 0
        self._failures: dict[str, _Failures] = {}
        self.refusals = LogSummary("logins refused unchecked (since the last such line)")

    def _entry(self, key: str, now: float) -> _Failures | None:
        entry = self._failures.get(key)
        if (
            entry is not None
            and entry.pending == 0
            and (now - entry.last > self.auth.failure_window_s)
        ):
            del self._failures[key]
            return None
        return entry

    def _wait(self, entry: _Failures | None, now: float) -> float:
        """Seconds before one more attempt on this key may be checked."""
        if entry is None:
            return 0.0
        attempts = entry.count + entry.pending
        if attempts < self.auth.free_attempts:
            return 0.0
        if entry.pending:  # one delayed attempt at a time
            return self.auth.backoff_base_s
        over = entry.count - self.auth.free_attempts
        delay = min(self.auth.backoff_max_s, self.auth.backoff_base_s * 2.0 ** min(over, 60))
        return max(0.0, entry.last + delay - now)

    def precheck(self, address: str) -> LoginRefused | None:
        """What `admit` would refuse without knowing the user name: lets the
        refusals of a flood be answered before the form is even parsed."""
        if self.in_flight >= self.auth.max_concurrent_logins:
            return LoginRefused(503, BUSY, 1)
        now = self.clock()
        wait = self._wait(self._entry(f"addr:{address}", now), now)
        return LoginRefused(429, _delayed(wait), wait) if wait > 0 else None

    def refused(self, refusal: LoginRefused) -> None:
        """Log a refusal, as a summary: a flood makes hundreds a second."""
        self.refusals.note(f"refused_{refusal.status}", in_flight=self.in_flight)

    def admit(self, user: str, address: str) -> LoginTicket:
        """Take a slot for checking `user`'s password from `address`, or raise
        LoginRefused. Never awaits."""
        if self.in_flight >= self.auth.max_concurrent_logins:
            raise LoginRefused(503, BUSY, 1)
        now = self.clock()
        if len(self._failures) > 10_000:  # names and addresses an attacker made up
            self._forget_old(now)
        addr_key, user_key = f"addr:{address}", f"user:{user}"
        addr = self._entry(addr_key, now)
        wait = self._wait(addr, now)
        if addr is not None:  # a clean address is not held up by the user's failures
            wait = max(wait, self._wait(self._entry(user_key, now), now))
        if wait > 0:
            raise LoginRefused(429, _delayed(wait), wait)
        keys = (addr_key, user_key)
        for key in keys:
            self._failures.setdefault(key, _Failures()).pending += 1
        self.in_flight += 1
        return LoginTicket(keys)

    def _forget_old(self, now: float) -> None:
        for key in list(self._failures):
            self._entry(key, now)

    def _end(self, ticket: LoginTicket) -> None:
        assert not ticket.ended, "a login ticket ended twice"
        ticket.ended = True
        self.in_flight -= 1
        for key in ticket.keys:
            entry = self._failures.get(key)
            if entry is not None:
                entry.pending -= 1

    def failed(self, ticket: LoginTicket) -> None:
        self._end(ticket)
        now = self.clock()
        for key in ticket.keys:
            entry = self._failures.setdefault(key, _Failures())
            entry.count += 1
            entry.last = now

    def succeeded(self, ticket: LoginTicket) -> None:
        self._end(ticket)
        for key in ticket.keys:
            entry = self._failures.get(key)
            if entry is not None and entry.pending == 0:
                del self._failures[key]
            elif entry is not None:
                entry.count = 0

    def abandon(self, ticket: LoginTicket) -> None:
        """The check never finished (client gone, storage error): not a failure."""
        if not ticket.ended:
            self._end(ticket)
