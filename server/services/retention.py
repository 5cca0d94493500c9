"""Privacy by default: records about people are deleted once they have
served their purpose (docs/privacy.md).

Each kind of record is a `Records`: how to count and delete those older
than a cutoff, and how far back it is kept. The server applies every
kind's retention by itself, every `retention.interval_s`, and logs what it
deleted (`Retention.run`, started in server/composition.py); an operator
deletes everything before a date with `mamaroom purge --before DATE`
(`purge`). Both delete in small batches, each its own short transaction,
so the call path, which writes to the same database, never waits long.

- mothers' reminders: a phone's push address and the rooms she chose; the
  server deletes each once it lapses (its expiry: MOTHER_TTL_S, 2 h, after
  she set it), purge those set before the date;
- alerts: closed alerts with their timelines (who acknowledged, whom the
  escalation paged, when), from when they closed; kept
  `retention.alert_days` (365). Open alerts are never deleted.

Raw telemetry has its own retention, applied by the gateway
(storage.telemetry_retention_days).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mamaroom.config import RetentionSettings
from mamaroom.logs import get_logger
from mamaroom.storage import StorageError
from server.alerts_db import AlertsDb
from server.services.webpush import PushDb
from server.services.wechat import WechatDb

log = get_logger(__name__)
DAY_MS = 86_400_000
#: Records deleted per transaction.
BATCH = 500


@dataclass(frozen=True)
class Records:
    """One kind of record about people."""

    #: The count that tells how many records went (the first of `count`'s keys).
    name: str
    #: cutoff (ms) → how many there are from before it, by what is counted.
    count: Callable[[int], Awaitable[dict[str, int]]]
    #: (cutoff, batch size) → deleted in one batch, by what is counted;
    #: fewer of `name` than the batch size deleted = none left.
    delete: Callable[[int, int], Awaitable[dict[str, int]]]
    #: (now ms, batch size) → one batch of what is past its time: the server's
    #: own retention, same shape as `delete`.
    expire: Callable[[int, int], Awaitable[dict[str, int]]]


def reminders(db: PushDb) -> Records:
    async def count(before_ms: int) -> dict[str, int]:
        return {"reminders": await db.count_mothers_before(before_ms)}

    async def delete(before_ms: int, limit: int) -> dict[str, int]:
        return {"reminders": await db.delete_mothers_before(before_ms, limit)}

    async def expire(now_ms: int, limit: int) -> dict[str, int]:
        # Past the expiry each was set with (MOTHER_TTL_S after it was set).
        return {"reminders": await db.delete_lapsed(now_ms, limit)}

    return Records("reminders", count, delete, expire)


def wechat(db: WechatDb, table: str) -> Records:
    """A mother's WeChat reminders (her openid) or OAuth sessions (cookie →
    openid): `wechat_reminders` or `wechat_sessions`."""

    async def count(before_ms: int) -> dict[str, int]:
        return {table: await db.count_made_before(table, before_ms)}

    async def delete(before_ms: int, limit: int) -> dict[str, int]:
        return {table: await db.delete_made_before(table, before_ms, limit)}

    async def expire(now_ms: int, limit: int) -> dict[str, int]:
        return {table: await db.delete_lapsed(table, now_ms, limit)}

    return Records(table, count, delete, expire)


def alerts(db: AlertsDb, settings: RetentionSettings) -> Records:
    async def expire(now_ms: int, limit: int) -> dict[str, int]:
        return await db.delete_closed_before(now_ms - settings.alert_days * DAY_MS, limit)

    return Records("alerts", db.count_closed_before, db.delete_closed_before, expire)


async def delete_before(
    records: Records,
    before_ms: int,
    *,
    progress: Callable[[dict[str, int]], None] | None = None,
    limit: int = BATCH,
) -> dict[str, int]:
    """Every record of a kind from before `before_ms`, batch by batch;
    `progress` gets the running totals after each batch."""
    return await _batches(
        records.name, functools.partial(records.delete, before_ms), progress, limit
    )


async def expire(records: Records, now_ms: int, limit: int = BATCH) -> dict[str, int]:
    """Every record of a kind past its time, batch by batch."""
    return await _batches(records.name, functools.partial(records.expire, now_ms), None, limit)


async def _batches(
    name: str,
    batch: Callable[[int], Awaitable[dict[str, int]]],
    progress: Callable[[dict[str, int]], None] | None,
    limit: int,
) -> dict[str, int]:
    total: dict[str, int] = {}
    while True:
        done = await batch(limit)
        for key, n in done.items():
            total[key] = total.get(key, 0) + n
        if progress is not None:
            progress(total)
        if done.get(name, 0) < limit:
            return total


class Retention:
    """The server's own retention: every kind, every `settings.interval_s`."""

    def __init__(
        self,
        settings: RetentionSettings,
        kinds: list[Records],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.kinds = list(kinds)
        self._clock = clock

    def add(self, records: Records) -> None:
        """Another kind of record about people (e.g. another reminder channel)."""
        self.kinds.append(records)

    async def apply(self) -> dict[str, int]:
        """One round; logs what it deleted (at info when anything went)."""
        now_ms = int(self._clock() * 1000)
        deleted: dict[str, int] = {}
        for records in self.kinds:
            deleted |= await expire(records, now_ms)
        gone = sum(deleted.get(r.name, 0) for r in self.kinds)
        log.log(
            20 if gone else 10, "retention applied", **deleted, alert_days=self.settings.alert_days
        )
        return deleted

    async def run(self) -> None:
        log.info(
            "retention on",
            kinds=[r.name for r in self.kinds],
            alert_days=self.settings.alert_days,
            every_s=self.settings.interval_s,
        )
        while True:
            # A failed round (a busy or full disk) must not end the task.
            try:
                await self.apply()
            except StorageError as exc:
                log.error("retention failed; will retry", error=str(exc))
            except Exception:
                log.exception("retention failed; will retry")
            await asyncio.sleep(self.settings.interval_s)
