"""Serving HTTP so that no web client can starve the emergency-call path.

The call path (MQTT → alert → `received` → paging) runs in the same process
and on the same event loop as the web server, and needs file descriptors of
its own (the broker socket, SQLite files, the serial line, IM connections).
So, at start:

- the soft RLIMIT_NOFILE is raised to the hard limit, and the HTTP connection
  caps are sized below it with `server.fd_reserve` descriptors kept back;
- uvicorn accepts at most ACCEPT_BATCH connections per loop turn (its
  `backlog`, which asyncio also uses as its accept-loop count), so one burst
  can never take the last descriptors;
- every connection goes through GuardedH11Protocol: a total cap and a cap
  per client address (a 503 beyond them, then closed), a deadline for the
  request line and headers (slowloris), and an idle timeout on request bodies;
- the log lines a flood makes (accept errors such as EMFILE, bad requests,
  refusals) are rate-limited, so a flood cannot fill the disk.

uvicorn has knobs for some of this (`limit_concurrency`, `timeout_keep_alive`)
but not for holding idle sockets, half-sent headers or per-address caps:
`limit_concurrency` only answers 503 to a *complete* request and closes nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from mamaroom.config import ServerSettings, Settings
from mamaroom.logs import get_logger

log = get_logger(__name__)

#: Connections accepted per event-loop turn at most (and the listen backlog).
ACCEPT_BATCH = 128
#: Refused connections kept open briefly so the client reads its 503 (closing
#: a socket with unread input sends a reset that can destroy the response);
#: beyond this many, refused connections are closed at once.
LINGER_MAX = 64
LINGER_S = 1.0
#: HTTP reads handled per event-loop iteration at most (TickQuota).
REQUESTS_PER_TICK = 4
#: Fewest connections the server will serve, however low the fd limit.
MIN_CONNECTIONS = 16
#: Rate limit of repeated log lines: `LOG_BURST` per `LOG_INTERVAL_S` each.
LOG_BURST = 5
LOG_INTERVAL_S = 10.0

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 5\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def _refusal(detail: str) -> bytes:
    body = b'{"detail":"%s"}' % detail.encode()
    return _REFUSAL % (len(body), body)


def raise_fd_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: (before, now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. above fs.nr_open
            log.warning(
                "could not raise the file-descriptor limit", soft=soft, hard=hard, error=str(exc)
            )
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft, now, hard


def connection_budget(fd_limit: int, reserve: int) -> int:
    """Connections that fit under `fd_limit` with `reserve` descriptors kept
    back, one accept batch and the lingering refusals in flight, and each
    connection allowed a second descriptor (a static file being sent)."""
    return max(MIN_CONNECTIONS, (fd_limit - reserve - ACCEPT_BATCH - LINGER_MAX) // 2)


class LogSummary:
    """Counts of something a flood makes thousands of a second, logged as one
    warning line with the counts at most every LOG_INTERVAL_S."""

    def __init__(self, event: str, interval_s: float = LOG_INTERVAL_S) -> None:
        self.event = event
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self._last = -math.inf
        self._flush: asyncio.TimerHandle | None = None

    def note(self, what: str, **context: Any) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self._context = context
        if self._flush is not None:
            return
        wait = self._last + self.interval_s - time.monotonic()
        if wait <= 0:
            self.flush()
        else:
            self._flush = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        self._flush = None
        self._last = time.monotonic()
        if self.counts:
            log.warning(self.event, **self._context, **self.counts)
            self.counts = {}


class TickQuota:
    """At most `per_tick` HTTP reads handled per event-loop iteration; the rest
    wait, in order, for the next ones.

    Without it, 300 clients answered at once come back at once: one select()
    returns 300 readable sockets, their requests all start in the next
    iteration, and every step of an emergency call (MQTT read, the commit,
    the `received` publish) queues behind ~150 ms of HTTP work. With it, each
    such step waits behind at most `per_tick` requests' worth."""

    def __init__(self, per_tick: int) -> None:
        self.per_tick = per_tick
        self.used = 0
        self.waiting: collections.deque[GuardedH11Protocol] = collections.deque()
        self._tick: asyncio.Handle | None = None

    def _schedule(self) -> None:
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_soon(self._next)

    def take(self) -> bool:
        self._schedule()
        if self.used < self.per_tick and not self.waiting:
            self.used += 1
            return True
        return False

    def wait(self, proto: GuardedH11Protocol) -> None:
        self.waiting.append(proto)
        self._schedule()

    def _next(self) -> None:
        self._tick = None
        busy, self.used = self.used, 0
        while self.waiting and self.used < self.per_tick:
            proto = self.waiting.popleft()
            self.used += 1
            try:
                proto.resume_deferred()
            except Exception:  # one bad connection must not stall the others
                log.exception("web connection failed; closed")
                proto.transport.abort()
        if self.waiting or busy:
            self._schedule()


@dataclass
class ConnectionGuard:
    """Connection counts and caps shared by every connection of one server."""

    total: int
    per_client: int
    header_timeout_s: float
    idle_timeout_s: float
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    lingering: int = 0
    quota: TickQuota = field(default_factory=lambda: TickQuota(REQUESTS_PER_TICK))
    summary: LogSummary = field(
        default_factory=lambda: LogSummary(
            "web connections refused or timed out (since the last such line)"
        )
    )

    @classmethod
    def from_settings(cls, server: ServerSettings, fd_limit: int) -> ConnectionGuard:
        budget = connection_budget(fd_limit, server.fd_reserve)
        total = server.max_connections or budget
        if total > budget:
            log.warning(
                "server.max_connections is more than the file-descriptor limit "
                "allows; using the lower figure",
                configured=total,
                used=budget,
                fd_limit=fd_limit,
                fd_reserve=server.fd_reserve,
            )
            total = budget
        return cls(
            total=total,
            per_client=server.max_connections_per_client,
            header_timeout_s=server.header_timeout_s,
            idle_timeout_s=server.idle_timeout_s,
            trusted=[ipaddress.ip_network(p, strict=False) for p in server.trusted_proxies],
        )

    def is_trusted(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def admit(self, host: str) -> str | None:
        """Count a new connection from `host`, or say why it is refused."""
        if self.open >= self.total:
            return "too many connections"
        exempt = self.is_trusted(host)
        if not exempt and self.by_client.get(host, 0) >= self.per_client:
            return "too many connections from this address"
        self.open += 1
        if not exempt:
            self.by_client[host] = self.by_client.get(host, 0) + 1
        return None

    def release(self, host: str) -> None:
        self.open -= 1
        left = self.by_client.get(host, 0) - 1
        if left > 0:
            self.by_client[host] = left
        else:
            self.by_client.pop(host, None)

    def note(self, what: str) -> None:
        """Count a refusal or timeout (logged as a summary line)."""
        self.summary.note(what, open=self.open, max_connections=self.total)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the guard's caps and timeouts."""

    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._host = self.client[0] if self.client else "?"
        self._counted = False
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._deferred: bytearray | None = None
        reason = self.guard.admit(self._host)
        if reason is not None:
            self._refuse(reason)
            return
        self._counted = True
        self._arm_header_timer()

    def _refuse(self, reason: str) -> None:
        self._refused = True
        self.guard.note(reason)
        self.transport.write(_refusal(reason))
        if self.guard.lingering < LINGER_MAX and self.transport.can_write_eof():
            # Half-close and read what the client sends until it closes (or
            # LINGER_S): it gets the 503 instead of a connection reset.
            self.guard.lingering += 1
            self._lingering = True
            self.transport.write_eof()
            self._header_timer = self.loop.call_later(LINGER_S, self.transport.abort)
        else:
            self._lingering = False
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._counted:
            self._counted = False
            self.guard.release(self._host)
        if self._refused and self._lingering:
            self._lingering = False
            self.guard.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the 503 is sent; whatever the client says is dropped
        if self._deferred is not None:
            self._deferred += data
            return
        if not self.guard.quota.take():  # this loop turn has had its share
            self._deferred = bytearray(data)
            self.transport.pause_reading()
            self.guard.quota.wait(self)
            return
        self._handle(data)

    def resume_deferred(self) -> None:
        """TickQuota's turn for the data held back."""
        data, self._deferred = self._deferred, None
        if data is None or self.transport.is_closing():
            return
        if not self.flow.read_paused:  # uvicorn may hold it paused itself (pipelining)
            self.transport.resume_reading()
        self._handle(bytes(data))

    def _handle(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_timers()
            return
        state = self.conn.their_state
        if state is not h11.IDLE and self._header_timer is not None:
            self._header_timer.cancel()  # the request line and headers are in
            self._header_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if state is h11.SEND_BODY:  # a body on its way: it must keep coming
            self._idle_timer = self.loop.call_later(
                self.guard.idle_timeout_s, self._timed_out, "request body stalled"
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            # Waiting for the next request on a kept-alive connection: uvicorn's
            # keep-alive timer ends at the first byte; this deadline does not.
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(
            self.guard.header_timeout_s, self._timed_out, "request headers too slow"
        )

    def _timed_out(self, what: str) -> None:
        self._header_timer = self._idle_timer = None
        if self.transport.is_closing():
            return
        self.guard.note(what)
        # abort, not close: a client that does not read would keep a close
        # waiting on its full send buffer.
        self.transport.abort()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._idle_timer = None


def protocol_class(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol bound to `guard` (uvicorn builds protocols itself)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


class RateLimitFilter(logging.Filter):
    """Lets through LOG_BURST records of each message per LOG_INTERVAL_S; the
    next one let through says how many were dropped. Against log loops such as
    asyncio's "socket.accept() out of system resource" at EMFILE."""

    def __init__(self, burst: int = LOG_BURST, interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        #: (logger, message) → [window start, let through, dropped]
        self._seen: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.interval_s:
            dropped = int(state[2]) if state else 0
            self._seen[key] = [now, 1, 0]
            if len(self._seen) > 1000:  # many different messages: start over
                self._seen = {key: self._seen[key]}
            if dropped and isinstance(record.msg, str):
                record.msg = f"{record.msg} [{dropped} more like this dropped]"
            return True
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        return False


#: Loggers a connection flood can make loop.
FLOOD_LOGGERS = ("asyncio", "uvicorn.error")


def rate_limit_logs() -> None:
    for name in FLOOD_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter())


def serve(app: Starlette, settings: Settings) -> None:
    """Run `app` under uvicorn with the guard; blocks until stopped."""
    import uvicorn

    before, fd_limit, hard = raise_fd_limit()
    guard = ConnectionGuard.from_settings(settings.server, fd_limit)
    trusted = [str(n) for n in guard.trusted]
    log.info(
        "web connection limits",
        fd_limit_before=before,
        fd_limit=fd_limit,
        fd_hard_limit=hard,
        fd_reserve=settings.server.fd_reserve,
        max_connections=guard.total,
        max_connections_per_client=guard.per_client,
        accept_batch=ACCEPT_BATCH,
        header_timeout_s=guard.header_timeout_s,
        idle_timeout_s=guard.idle_timeout_s,
        trusted_proxies=trusted or "none",
    )
    rate_limit_logs()
    from server.security import LoginGate

    config = uvicorn.Config(
        LoginGate(app),
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        http=protocol_class(guard),
        backlog=ACCEPT_BATCH,
        # X-Forwarded-For only from the configured proxies (uvicorn's default
        # trusts 127.0.0.1, so anything on this machine could claim any address).
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
