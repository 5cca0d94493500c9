"""`mamaroom qr` (a printable sheet of door QR codes) and `mamaroom webpush keys`."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

import segno
import typer
from rich.console import Console

from mamaroom.config import ConfigError, Settings, load_settings
from mamaroom.contract import RegistryRoom
from mamaroom.registry import RoomsCsvError, read_rooms_csv

webpush_app = typer.Typer(help="Web Push (VAPID) for the pages.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

SHEET_CSS = """
@page { size: A4; margin: 10mm; }
body { font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; margin: 0; }
.sheet { display: grid; grid-template-columns: repeat(3, 1fr); gap: 6mm; }
.door { border: 1px dashed #999; padding: 4mm; text-align: center; break-inside: avoid; }
.door svg { width: 42mm; height: 42mm; }
.door h2 { font-size: 12pt; margin: 0 0 1mm; }
.door p { font-size: 8pt; margin: 1mm 0; color: #333; overflow-wrap: break-word; hyphens: auto; }
/* Only the address may break anywhere: it has no words. */
.door .url { word-break: break-all; }
.door .call { font-size: 10pt; font-weight: bold; color: #000; }
"""


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _rooms(settings: Settings) -> list[RegistryRoom]:
    """The server's registry (the truth once it has started), else the rooms CSV."""
    if settings.server_db_path.exists():
        from server.db import ServerDb

        async def read() -> list[RegistryRoom] | None:
            db = ServerDb(settings.server_db_path)
            await db.open()
            try:
                registry = await db.registry()
            finally:
                await db.close()
            return registry.rooms if registry else None

        rooms = asyncio.run(read())
        if rooms:
            return rooms
    try:
        return read_rooms_csv(settings.rooms_csv)
    except RoomsCsvError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None


def qr(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the sheet and the SVGs")],
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Address the phones open (default: pages.public_url, else http.host:port)"
        ),
    ] = None,
    building: Annotated[str | None, typer.Option(help="Only this building's rooms")] = None,
) -> None:
    """Print a sheet of QR codes, one per room door, each opening /r/{room}.

    Writes DIR/index.html (A4, print it from a browser) and DIR/svg/{room}.svg.
    """
    from server.api.pages import public_url

    settings = _settings()
    base = (base_url or public_url(settings)).rstrip("/")
    host = urlsplit(base).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0") or host.startswith("127."):
        # Printed and screwed to 190 doors, this address would open nothing on
        # a phone: say so loudly (and keep going: a test print is fine).
        err.print(
            f"[yellow]warning: the QR codes open {base}, an address of this machine "
            "only; a phone cannot reach it. Give --base-url or set "
            "pages.public_url to the address phones use "
            "(e.g. https://mamaroom.park.example).[/yellow]",
            highlight=False,
            soft_wrap=True,
        )
    rooms = [
        r for r in _rooms(settings) if building is None or building in (r.building, r.building_en)
    ]
    if not rooms:
        err.print("no rooms to print")
        raise typer.Exit(1)
    svg_dir = out_dir / "svg"
    svg_dir.mkdir(parents=True, exist_ok=True)
    doors = []
    for r in sorted(rooms, key=lambda r: (r.building, r.floor, r.id)):
        url = f"{base}/r/{quote(r.id)}"
        code = segno.make(url, error="m")  # survives a scratch or a smudge
        code.save(str(svg_dir / f"{r.id}.svg"), scale=8, border=2, title=r.id)
        doors.append(
            f'<div class="door"><h2>{html.escape(r.name)}</h2>'
            f"{code.svg_inline(scale=4, border=2, title=r.id)}"
            f'<p class="call">扫码查看是否空闲 · Scan: is it free?</p>'
            f'<p lang="en">{html.escape(r.name_en)}</p>'
            f'<p class="url">{html.escape(url)}</p></div>'
        )
    (out_dir / "index.html").write_text(
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>母婴室二维码 · {len(doors)}</title><style>{SHEET_CSS}</style></head>"
        f'<body><div class="sheet">{"".join(doors)}</div></body></html>',
        encoding="utf-8",
    )
    out.print(
        f"{len(doors)} QR codes for {base}/r/… in {out_dir}/index.html (print it on A4)"
        f" and {svg_dir}/"
    )


@webpush_app.command("keys")
def webpush_keys() -> None:
    """Make a VAPID key pair for Web Push; put both in the configuration."""
    from server.services.webpush import make_vapid_keys

    public, private = make_vapid_keys()
    # Plain lines, unwrapped: they are meant to be pasted into a file.
    typer.echo("# Add to the configuration file (the private key is a secret):")
    typer.echo("[pages]")
    typer.echo(f'vapid_public_key = "{public}"')
    typer.echo(f'vapid_private_key = "{private}"')
    typer.echo(f"# or: MAMAROOM_PAGES__VAPID_PUBLIC_KEY={public}")
    typer.echo(f"#     MAMAROOM_PAGES__VAPID_PRIVATE_KEY={private}")
