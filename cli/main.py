"""The `mamaroom` command: one entry point for every process and tool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.broker import device_add_command
from cli.dead_letters import dead_letters_command
from cli.device import device_app
from cli.pages import qr, webpush_app
from mamaroom.config import ConfigError, Settings, load_settings
from mamaroom.contract import RegistryRoom
from mamaroom.logs import setup_logging
from mamaroom.registry import RoomsCsvError, read_rooms_csv

app = typer.Typer(
    name="mamaroom",
    help="Live occupancy and emergency calls for the park's nursing rooms (母婴室).\n\n"
    "Configuration: a TOML file named by MAMAROOM_CONFIG, overridden by MAMAROOM_<KEY> "
    "environment variables (see docs/configuration.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
rooms_app = typer.Typer(help="Check and inspect the rooms CSV.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts (staff, manager, admin).", no_args_is_help=True)
history_app = typer.Typer(
    help="Generate realistic history for trends and benchmarks.", no_args_is_help=True
)
app.add_typer(rooms_app, name="rooms")
app.add_typer(config_app, name="config")
app.add_typer(history_app, name="history")
app.add_typer(user_app, name="user")
# `device add` (broker account) beside `device bundle/ota/provision`.
device_app.command("add")(device_add_command)
app.add_typer(device_app, name="device")
app.add_typer(webpush_app, name="webpush")
app.command("qr")(qr)
app.command("dead-letters")(dead_letters_command)
err = Console(stderr=True)


def _error(text: str) -> None:
    """An error for people, printed as-is: with markup on, rich would take
    text such as `[a-z0-9-]` in a pattern for a style and drop it."""
    err.print(text, style="red", markup=False, highlight=False, soft_wrap=True)


def _settings(process: str, **overrides: object) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        _error(str(exc))
        raise typer.Exit(2) from None
    setup_logging(settings.log, process)
    return settings


def _run(coro: Coroutine[object, object, None]) -> None:
    """Run a service until it ends, Ctrl-C or SIGTERM (both stop it cleanly)."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await coro

    asyncio.run(main())


@app.command()
def gateway() -> None:
    """Run the gateway: validate device messages, store them, publish room states.

    Connects to the broker at mqtt.url with a fixed client id (gateway.client_id)
    and a persistent session, so messages that arrive while it is down wait at
    the broker. Metrics on http://gateway.metrics_host:gateway.metrics_port/metrics.
    """
    from gateway.service import run_gateway

    _run(run_gateway(_settings("gateway")))


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Listen address [default: http.host]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: http.port]")] = None,
) -> None:
    """Run the web server: room API, live stream, pages, health and metrics.

    On first start it seeds the room registry from rooms_csv into its database
    (data_dir/server.sqlite); after that the database is the source of truth.
    At start it raises its file-descriptor limit to the hard limit and caps web
    connections below it (server.max_connections, server.fd_reserve).
    """
    from server.app import create_app
    from server.connections import serve

    settings = _settings("server")
    if host:
        settings.http.host = host
    if port:
        settings.http.port = port
    if not settings.server_db_path.exists():
        # First start seeds the registry: fail with every bad line, before starting.
        _check_csv(settings.rooms_csv, key="rooms_csv (MAMAROOM_ROOMS_CSV)")
    _check_site_file(settings)
    from server.services.escalation import refuse_unpaged

    # A `web` server never pages (its calls server does): nothing to refuse.
    why = None if settings.server.role == "web" else refuse_unpaged(settings)
    if why is not None:
        _error(why)
        raise typer.Exit(2)
    # Connection caps, timeouts and the fd limit: server/connections.py.
    serve(create_app(settings), settings)


@app.command()
def watchdog() -> None:
    """Run the dead-man's switch: page the security desk (watchdog.pagers over
    ESPA, watchdog.im over IM) when a gateway's heartbeat, the server's
    /healthz or the broker stops, and again when it is back.

    Independent of the server: run it beside it, better on another machine.
    """
    from watchdog.service import run_watchdog

    settings = _settings("watchdog")
    try:
        _run(run_watchdog(settings))
    except ValueError as exc:  # a watchdog.im name without a destination
        err.print(f"[red]config error: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def simulate(
    rooms: Annotated[
        int, typer.Option(min=1, help="How many rooms to simulate (the first N of rooms_csv)")
    ] = 190,
    speed: Annotated[
        float,
        typer.Option(
            min=0.1, max=3600, help="Time compression of sessions and gaps (1 = real time)"
        ),
    ] = 1.0,
    keepalive: Annotated[
        int, typer.Option(min=2, max=3600, help="MQTT keepalive of each node, seconds")
    ] = 30,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a repeatable run")] = None,
    call_every: Annotated[
        float,
        typer.Option(
            min=0, help="Mean hours between emergency calls per room, simulated time (0 = no calls)"
        ),
    ] = 0.0,
) -> None:
    """Simulate N room nodes: one MQTT connection each, with its own last will,
    boot counter and seq; door-lock sessions of realistic length; telemetry every 60 s;
    with --call-every, emergency calls re-published every 3 s until `received`,
    each status shown back, and staff who come and reset the call.

    The demo's population and the benchmarks' load; not the firmware.
    """
    from simulator.population import pick_devices, run_population

    settings = _settings("simulate")
    try:
        devices = pick_devices(settings, rooms)
    except (RoomsCsvError, ValueError) as exc:
        _error(str(exc))
        raise typer.Exit(2) from None
    _run(
        run_population(
            settings,
            devices,
            speed=speed,
            keepalive_s=keepalive,
            seed=seed,
            call_every_h=call_every,
        )
    )


@app.command()
def demo(
    rooms: Annotated[int, typer.Option(min=1, help="Rooms to simulate")] = 190,
    speed: Annotated[
        float, typer.Option(min=0.1, help="Time compression of the simulated rooms")
    ] = 20.0,
) -> None:
    """Run the whole system on this machine: broker (the one at mqtt.url, or an
    embedded one when none answers), gateway, server and simulated rooms.

    Prints the URL to open; Ctrl-C stops everything.
    """
    from cli.demo import run_demo

    settings = _settings("demo")
    raise typer.Exit(asyncio.run(run_demo(settings, rooms=rooms, speed=speed)))


def _check_csv(path: Path, key: str | None = None) -> list[RegistryRoom]:
    try:
        return read_rooms_csv(path)
    except RoomsCsvError as exc:
        # A file named by a setting: say which setting, so that the fix is plain.
        _error(f"{key} = {exc}" if key else str(exc))
        raise typer.Exit(2) from None


def _check_site_file(settings: Settings) -> None:
    """A site file the config names must be there and valid; without the
    setting, a missing file only means rooms are listed without walking times
    (the server logs that)."""
    from mamaroom.site import SiteError, read_site_file

    path = settings.pages.site_file
    if "site_file" in settings.pages.model_fields_set and not path.is_file():
        _error(
            f"pages.site_file (MAMAROOM_PAGES__SITE_FILE) = {path}: no such file. It holds the "
            "buildings' walking times (site/site.toml is the example; docs/configuration.md); "
            "remove the setting to list rooms without walking times."
        )
        raise typer.Exit(2)
    try:
        if path.is_file():
            read_site_file(path)
    except SiteError as exc:
        _error(f"pages.site_file (MAMAROOM_PAGES__SITE_FILE) = {exc}")
        raise typer.Exit(2) from None


@rooms_app.command("check")
def rooms_check(
    csv: Annotated[
        Path | None, typer.Argument(help="The CSV [default: rooms_csv from config]")
    ] = None,
) -> None:
    """Check a rooms CSV: every bad row by line number, duplicates refused."""
    path = csv or _settings("rooms").rooms_csv
    rooms = _check_csv(path)
    table = Table(title=f"{path}: {len(rooms)} rooms, all rows valid")
    for col in ("building", "rooms", "floors", "with device", "in service"):
        table.add_column(col)
    by_building = Counter(r.building for r in rooms)
    for building, count in by_building.items():
        rs = [r for r in rooms if r.building == building]
        table.add_row(
            building,
            str(count),
            str(len({r.floor for r in rs})),
            str(sum(1 for r in rs if r.device)),
            str(sum(1 for r in rs if r.in_service)),
        )
    Console().print(table)
    # Valid, but a mother choosing between two rooms of the same name cannot tell them apart.
    for field in ("name", "name_en"):
        same = Counter(getattr(r, field) for r in rooms)
        for name, n in same.items():
            if n > 1:
                ids = ", ".join(r.id for r in rooms if getattr(r, field) == name)
                err.print(
                    f"warning: {n} rooms share the {field} {name!r}: {ids}",
                    style="yellow",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )


@history_app.command("generate")
def history_generate(
    days: Annotated[int, typer.Option(min=1, max=3660, help="How many days of history")] = 365,
    rooms: Annotated[int, typer.Option(min=1, help="Rooms (the first N of rooms_csv)")] = 190,
    backend: Annotated[
        str, typer.Option(help="sqlite or influxdb [default: storage.backend]")
    ] = "",
    end: Annotated[
        str, typer.Option(help="Day after the last generated day, YYYY-MM-DD [default: today]")
    ] = "",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed adds nothing twice")] = 1,
    telemetry_every: Annotated[
        int,
        typer.Option(
            min=1,
            max=60,
            help="Minutes between telemetry points (60 s live; sparser here "
            "keeps a year within what SQLite holds comfortably; at most an hour, as a node's "
            "telemetry_s)",
        ),
    ] = 30,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write even where the store already holds other messages (live "
            "nodes' or another run's): their sessions and the generated ones would mix",
        ),
    ] = False,
) -> None:
    """Write a realistic past of occupancy (workday/hour patterns, lunch-time
    peaks, 15-40 min sessions, quiet public holidays), device outages and
    telemetry, with a progress bar. Deduplicated like live data.

    Safe beside live nodes: its boots start at 2**40 (no live message is
    taken for a duplicate) and it leaves the devices' health alone. It
    refuses a span that already holds other messages, unless --force."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from cli.history import OtherDataError, generate
    from server.history import HistoricCall, store_past_calls

    settings = _settings("history")
    chosen = backend or settings.storage.backend
    if chosen not in ("sqlite", "influxdb"):
        _error(f"--backend must be sqlite or influxdb, got {chosen!r}")
        raise typer.Exit(2)
    try:
        end_day = dt.date.fromisoformat(end) if end else dt.date.today()
    except ValueError:
        _error(f"--end must be YYYY-MM-DD, got {end!r}")
        raise typer.Exit(2) from None
    room_list = _check_csv(settings.rooms_csv)[:rooms]
    calls: list[HistoricCall] = []
    try:
        counts = asyncio.run(
            generate(
                settings,
                room_list,
                days=days,
                end=end_day,
                backend=chosen,
                seed=seed,
                telemetry_every_min=telemetry_every,
                calls=calls,
                force=force,
            )
        )
    except OtherDataError as exc:
        tz = ZoneInfo(settings.timezone)

        def when(ms: int) -> str:
            return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")

        first_day = dt.datetime.fromtimestamp(exc.first_ms / 1000, tz).date()
        _error(
            f"not written: {chosen} already holds other messages (live nodes', or another "
            f"history run's) from {when(exc.first_ms)} to {when(exc.last_ms)}, inside the "
            f"{days} days before {end_day}. Generated sessions would mix with theirs in "
            f"the same rooms and hours. Choose --end {first_day} or earlier (and --days to "
            "fit), or --force to write anyway."
        )
        raise typer.Exit(1) from None
    counts["alerts"] = asyncio.run(store_past_calls(settings, calls))
    Console().print(
        f"wrote {counts['occupancy']} occupancy events, {counts['telemetry']} "
        f"telemetry points, {counts['call']} call events "
        f"({counts['duplicates']} already there) and {counts['rollups']} hourly "
        f"rollups to {chosen}, and {counts['alerts']} past calls as alerts"
    )


@history_app.command("seed-demo", hidden=True)
def history_seed_demo(
    rooms: Annotated[int, typer.Option(min=1, help="The demo's rooms (the first N with a node)")],
    until_ms: Annotated[
        int,
        typer.Option(
            min=0,
            help="When the demo's live rooms started, ms since the epoch: the past ends there",
        ),
    ],
) -> None:
    """Write `mamaroom demo`'s past in a process of its own, at low priority:
    the four weeks before its live rooms, or from where an earlier run's data
    ends (cli/history.py). The demo runs this itself."""
    import os

    from cli.history import write_demo_history

    os.nice(10)  # the live demo comes first
    settings = _settings("history")
    parent = os.getppid()

    async def main() -> None:
        # Stopped by the demo (SIGTERM); and if the demo is gone, by itself.
        task = asyncio.create_task(
            write_demo_history(settings, rooms, until_ms, lambda text: print(text, flush=True))
        )
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=1)
                if os.getppid() != parent:
                    task.cancel()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    _run(main())


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ -)")],
    role: Annotated[str, typer.Option(help="staff, manager or admin")] = "staff",
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from standard input (for scripts)"
        ),
    ] = False,
) -> None:
    """Create an account, or set a new role and password for an existing one
    (which logs it out everywhere). The password is stored as an argon2id hash.

    The password needs auth.min_passphrase_length (10) characters besides the
    user's name, 5 different characters, and must not be a common password."""
    import re
    import sys

    from mamaroom.config import ACCOUNT_NAME
    from server.services.accounts import RANK, AccountError, AccountsDb

    settings = _settings("user")
    if not re.fullmatch(ACCOUNT_NAME, name):
        _error(f"bad name {name!r}: 2-64 letters, digits, '.', '_' or '-'")
        raise typer.Exit(2)
    if role not in RANK:
        _error(f"--role must be staff, manager or admin, got {role!r}")
        raise typer.Exit(2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)

    async def add() -> None:
        db = AccountsDb(settings.server_db_path, settings.auth)
        await db.open()
        try:
            await db.add_user(name, role, password)  # type: ignore[arg-type]
        finally:
            await db.close()

    try:
        asyncio.run(add())
    except AccountError as exc:
        _error(str(exc))
        raise typer.Exit(2) from None
    Console().print(f"account {name} ({role}) ready")


@user_app.command("list")
def user_list() -> None:
    """The accounts and their roles."""
    from server.services.accounts import AccountsDb

    settings = _settings("user")

    async def users() -> list[tuple[str, str, bool]]:
        db = AccountsDb(settings.server_db_path)
        await db.open()
        try:
            return await db.users()
        finally:
            await db.close()

    table = Table()
    for col in ("name", "role", "disabled"):
        table.add_column(col)
    for name, role, disabled in asyncio.run(users()):
        table.add_row(name, role, "yes" if disabled else "")
    Console().print(table)


@app.command("backup")
def backup_command(
    dest: Annotated[
        Path,
        typer.Argument(
            help="Folder to put the backup in (a new mamaroom-YYYYmmdd-HHMMSS folder inside)"
        ),
    ],
) -> None:
    """Back up the embedded databases of data_dir (registry, alerts, accounts,
    stored messages) while the services run: SQLite's online backup, each copy
    integrity-checked. Prints the new folder."""
    from cli.backup import BackupError, backup

    settings = _settings("backup")
    try:
        folder = backup(settings.data_dir, dest)
    except (BackupError, OSError) as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    print(folder)


@app.command("restore")
def restore_command(
    source: Annotated[Path, typer.Argument(help="A folder made by `mamaroom backup`")],
) -> None:
    """Restore a backup into data_dir. Stop the gateway and the server first.
    The current files are kept in data_dir/before-restore-<time>/."""
    from cli.backup import BackupError, restore

    settings = _settings("restore")
    try:
        names = restore(source, settings.data_dir)
    except (BackupError, OSError) as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    Console().print(f"restored {', '.join(names)} into {settings.data_dir}")


#: Setting names that hold a secret wherever they appear (passwords, API
#: tokens, the VAPID private key, app secrets): shown as *** by `config show`.
SECRET_KEY = re.compile(r"(password|token|secret|private_key)$")


@app.command("purge")
def purge_command(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            metavar="DATE",
            help="Delete records from before this day, YYYY-MM-DD, 00:00 site time "
            "(timezone); tomorrow's date deletes everything up to now",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts)")
    ] = False,
) -> None:
    """Delete the records about people from before a date, from the server's
    database: mothers' reminders (a phone's push address; set before DATE)
    and closed alerts with their timelines (who acknowledged, whom the
    escalation paged; closed before DATE). Open alerts are kept.

    Counts first, then asks; deletes in small batches, so the server may keep
    running. The server deletes these by itself too, after retention.*
    (docs/privacy.md)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from cli.purge import purge

    settings = _settings("purge")
    try:
        day = dt.date.fromisoformat(before)
    except ValueError:
        _error(f"--before must be YYYY-MM-DD, got {before!r}")
        raise typer.Exit(2) from None
    tz = ZoneInfo(settings.timezone)
    tomorrow = dt.datetime.now(tz).date() + dt.timedelta(days=1)
    if day > tomorrow:
        _error(
            f"--before {day} is in the future; {tomorrow} (tomorrow) already deletes "
            "everything up to now"
        )
        raise typer.Exit(2)
    if not settings.server_db_path.exists():
        _error(f"no server database at {settings.server_db_path} (data_dir)")
        raise typer.Exit(2)
    before_ms = int(dt.datetime.combine(day, dt.time(), tz).timestamp() * 1000)
    asyncio.run(purge(settings, day, before_ms, dry_run=dry_run, yes=yes))


def _mask_secrets(data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            _mask_secrets(value)
        elif value and SECRET_KEY.search(key):
            data[key] = "***"


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (file + environment + defaults) as JSON."""
    settings = _settings("config")
    data = json.loads(settings.model_dump_json())
    _mask_secrets(data)
    # Apprise URLs carry their service's keys (WeCom/DingTalk tokens, SMTP
    # passwords): show the service, not the secret.
    dests = data["paging"]["im"]["destinations"]
    for name, url in dests.items():
        dests[name] = url.split("://", 1)[0] + "://***" if "://" in url else "***"
    Console().print_json(data=data)


def main() -> None:
    app()
