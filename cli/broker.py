"""`mamaroom device add`: a room node's broker account (cli/broker_accounts.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.broker_accounts import (
    DEFAULT_PASSWD_FILE,
    DEFAULT_RELOAD,
    BrokerAccountError,
    device_add,
    node_config_json,
)
from mamaroom.config import ConfigError, load_settings

err = Console(stderr=True)


def device_add_command(
    device: Annotated[str, typer.Argument(help="The device id (a-z, 0-9, '-'; 1-32)")],
    room: Annotated[
        str | None,
        typer.Option(help="Put the device in this room (through the server's admin API)"),
    ] = None,
    passwd_file: Annotated[
        Path,
        typer.Option(
            envvar="MAMAROOM_BROKER_PASSWD_FILE", help="The devices' Mosquitto password file"
        ),
    ] = DEFAULT_PASSWD_FILE,
    server: Annotated[
        str | None, typer.Option(help="The server's URL [default: http://http.host:http.port]")
    ] = None,
    admin_user: Annotated[str, typer.Option(help="Admin account for the room change")] = "admin",
    reload_command: Annotated[
        str, typer.Option(help="How to make the broker re-read its password file; '' = do not")
    ] = DEFAULT_RELOAD,
    broker_host: Annotated[
        str | None,
        typer.Option(help="The broker's name as the nodes reach it [default: this machine's name]"),
    ] = None,
    broker_port: Annotated[int, typer.Option(help="The nodes' TLS port")] = 8883,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Give an existing device a new password (the old one stops working)"
        ),
    ] = False,
) -> None:
    """Create a room node's broker account: a random password in the broker's
    password file (mosquitto_passwd), the device in its room (--room), the
    broker reloaded; prints the node's config.json snippet.

    The admin password for --room comes from MAMAROOM_ADMIN_PASSWORD, or is
    asked for. No ACL line is needed: the shipped ACL's %u patterns limit
    every device to its own topics.
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    admin_password = None
    if room is not None:
        admin_password = os.environ.get("MAMAROOM_ADMIN_PASSWORD") or typer.prompt(
            f"password of {admin_user}", hide_input=True, err=True
        )
    url = server or f"http://{settings.http.host}:{settings.http.port}"
    try:
        account = device_add(
            device,
            room=room,
            passwd_file=passwd_file,
            server_url=url,
            admin_user=admin_user,
            admin_password=admin_password,
            reload_command=reload_command,
            replace=replace,
        )
    except BrokerAccountError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    where = f" in room {room}" if room else ""
    err.print(
        f"device {device}{where}: broker account ready in {passwd_file}"
        + ("" if reload_command else "; reload the broker to use it"),
        highlight=False,
    )
    err.print("config.json for the node (keep it secret, it holds the password):")
    # The snippet alone on stdout, so `mamaroom device add ... > config.json` works.
    print(node_config_json(account, broker_host or socket.getfqdn(), broker_port))
