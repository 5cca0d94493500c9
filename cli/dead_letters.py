"""`mamaroom dead-letters`: records a backend refused, listed and acknowledged.

Reads the gateway's own files in data_dir (store.sqlite, and
influx-spool.sqlite with InfluxDB); safe while the gateway runs (SQLite WAL).
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mamaroom.config import ConfigError, load_settings
from mamaroom.storage import dead_letters


def dead_letters_command(  # noqa: C901 (one CLI command's listing and acknowledging)
    ack: Annotated[
        list[str] | None,
        typer.Option(
            "--ack",
            help="Acknowledge one, as FILE:ID from the list (`store:3`, `spool:7`; "
            "a bare id means store); repeatable",
        ),
    ] = None,
    ack_all: Annotated[
        bool, typer.Option("--ack-all", help="Acknowledge every open dead letter")
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Include acknowledged ones")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List the records a storage backend refused (count, reason, payload), or
    acknowledge them. Ids are per file: `store` (the gateway) or `spool` (InfluxDB)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    files = {"store": settings.store_path, "spool": settings.spool_path}
    wanted: dict[str, list[int]] = {}
    for item in ack or []:
        name, _, number = item.rpartition(":")
        name = name or "store"
        if name not in files or not number.isdigit():
            typer.echo(
                f"error: --ack wants FILE:ID with FILE store or spool, got {item!r}", err=True
            )
            raise typer.Exit(2)
        wanted.setdefault(name, []).append(int(number))
    console = Console()
    now = int(time.time() * 1000)
    rows: list[tuple[str, dead_letters.DeadLetter]] = []
    for name, path in files.items():
        db = dead_letters.open_file(path)
        if db is None:
            continue
        with closing(db):
            if ack_all or ack:
                done = dead_letters.ack(db, None if ack_all else wanted.get(name, []), now)
                if done:
                    console.print(f"{name}: {done} dead letter(s) acknowledged")
                continue
            rows += [(name, d) for d in dead_letters.read(db, include_acked=show_all)]
    if ack_all or ack:
        return
    if as_json:
        for name, d in rows:
            typer.echo(
                json.dumps(
                    {
                        "file": name,
                        "id": d.id,
                        "at_ms": d.at_ms,
                        "source": d.source,
                        "reason": d.reason,
                        "device": d.device,
                        "topic": d.topic,
                        "payload": d.payload,
                        "acked_ms": d.acked_ms,
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table(title=f"{len(rows)} dead letter(s)" + ("" if show_all else ", open"))
    for column in ("file", "id", "at (UTC)", "source", "device", "reason", "payload"):
        table.add_column(column, overflow="fold")
    for name, d in rows:
        at = datetime.fromtimestamp(d.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            name,
            str(d.id),
            at + (" (acked)" if d.acked_ms else ""),
            d.source,
            d.device or "",
            d.reason[:200],
            d.payload[:300],
        )
    console.print(table)
