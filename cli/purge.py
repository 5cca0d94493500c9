"""`mamaroom purge --before DATE`: an operator deletes the records about
people from before a date (a request under PIPL, a site's own rule), the
same kinds the server deletes by itself (server/services/retention.py)."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console

from mamaroom.config import Settings
from mamaroom.logs import get_logger

log = get_logger(__name__)


async def purge(
    settings: Settings, day: dt.date, before_ms: int, *, dry_run: bool, yes: bool
) -> None:
    """Count, confirm (unless `yes`), delete batch by batch, say what went."""
    from server.alerts_db import AlertsDb
    from server.services.retention import alerts, delete_before, reminders, wechat
    from server.services.webpush import PushDb
    from server.services.wechat import WechatDb

    out = Console(soft_wrap=True)  # lines a script can grep, whatever the width
    push, alerts_db = PushDb(settings.server_db_path), AlertsDb(settings.server_db_path)
    wechat_db = WechatDb(settings.server_db_path)
    await push.open()
    await wechat_db.open()
    await alerts_db.open()
    try:
        kinds = [
            reminders(push),
            wechat(wechat_db, "wechat_reminders"),
            wechat(wechat_db, "wechat_sessions"),
            alerts(alerts_db, settings.retention),
        ]
        counts = [await k.count(before_ms) for k in kinds]
        out.print(
            f"Records from before {day} 00:00 ({settings.timezone}) in {settings.server_db_path}:",
            markup=False,
            highlight=False,
        )
        for found in counts:
            for key, n in found.items():
                out.print(f"  {key:<16} {n:>9,}", markup=False, highlight=False)
        out.print("  (open alerts are kept, however old)", markup=False, highlight=False)
        if dry_run:
            out.print("Dry run: nothing deleted.")
            return
        if not any(sum(c.values()) for c in counts):
            out.print("Nothing to delete.")
            return
        if not yes and not typer.confirm("Delete them?", default=False):
            out.print("Nothing deleted.")
            raise typer.Exit(1)
        deleted: dict[str, int] = {}
        for kind, found in zip(kinds, counts, strict=True):
            total = found[kind.name]

            def progress(done: dict[str, int], name: str = kind.name, total: int = total) -> None:
                out.print(
                    f"  deleting {name}: {done.get(name, 0):,} of {total:,}",
                    markup=False,
                    highlight=False,
                )

            deleted |= await delete_before(kind, before_ms, progress=progress)
        log.info("purge", before=str(day), **deleted)
        out.print(
            "Deleted: " + ", ".join(f"{k} {n:,}" for k, n in deleted.items()) + ".",
            markup=False,
            highlight=False,
        )
    finally:
        await alerts_db.close()
        await wechat_db.close()
        await push.close()
