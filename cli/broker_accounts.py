"""Broker accounts of the room nodes: one user per device, its password in
Mosquitto's password file, its room in the server's registry.

The password file is written by `mosquitto_passwd` itself (Mosquitto 2's
PBKDF2-SHA512 format), with the password given on its standard input, never
on a command line other users could read in `ps`. The ACL needs no line per
device: `pattern ... mr/v1/dev/%u/...` in deploy/mosquitto/mamaroom.acl gives
every user rights on its own subtree only, and the user name is the device id.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mamaroom.contract import is_device_id, is_room_id

#: Where deploy/README.md installs the devices' password file.
DEFAULT_PASSWD_FILE = Path("/etc/mosquitto/mamaroom/devices.passwd")
DEFAULT_RELOAD = "systemctl reload mosquitto"


class BrokerAccountError(Exception):
    """A device account that cannot be created; the message says why."""


@dataclass(frozen=True)
class DeviceAccount:
    device: str
    room: str | None
    password: str

    def node_config(
        self, broker_host: str, broker_port: int = 8883, ca_file: str = "ca.crt"
    ) -> dict[str, Any]:
        """The broker part of the node's config.json, in the firmware's own keys
        (firmware/config.py): the node's user name is its device id."""
        return {
            "device": self.device,
            "broker": f"mqtts://{broker_host}:{broker_port}",
            "password": self.password,
            "ca": ca_file,
        }


def new_password() -> str:
    """32 random URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def mosquitto_passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
    )
    if found is None:
        raise BrokerAccountError("mosquitto_passwd not found: install the `mosquitto` package")
    return found


def set_password(passwd_file: Path, user: str, password: str) -> None:
    """Add `user` to the password file, or give it a new password."""
    if not passwd_file.parent.is_dir():
        raise BrokerAccountError(f"no directory {passwd_file.parent} for the password file")
    args = [mosquitto_passwd_binary()]
    if not passwd_file.exists():
        args.append("-c")  # create
    args += [str(passwd_file), user]
    out = subprocess.run(
        args,
        input=f"{password}\n{password}\n",
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise BrokerAccountError(f"mosquitto_passwd failed: {detail[-1] if detail else '?'}")


def users_in(passwd_file: Path) -> set[str]:
    if not passwd_file.exists():
        return set()
    return {
        line.split(":", 1)[0]
        for line in passwd_file.read_text().splitlines()
        if ":" in line and not line.startswith("#")
    }


def assign_room(
    server_url: str,
    admin_user: str,
    admin_password: str,
    device: str,
    room: str,
    *,
    timeout: float = 10,
) -> None:
    """Put `device` in `room` through the server's admin API, so the change is
    published to the gateways at once (editing the database behind a running
    server would not be)."""
    with httpx.Client(base_url=server_url, timeout=timeout) as http:
        try:
            r = http.post(
                "/api/auth/token", data={"username": admin_user, "password": admin_password}
            )
            if r.status_code != 200:
                raise BrokerAccountError(f"login as {admin_user!r} refused ({r.status_code})")
            token = r.json()["access_token"]
            r = http.patch(
                f"/api/admin/rooms/{room}",
                json={"device": device},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise BrokerAccountError(f"server at {server_url} unreachable: {exc}") from None
        if r.status_code != 200:
            raise BrokerAccountError(f"room {room!r}: {_detail(r)}")


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return f"HTTP {r.status_code}"


def reload_broker(command: str) -> None:
    """Make Mosquitto re-read its password file (SIGHUP; `systemctl reload`)."""
    out = subprocess.run(
        shlex.split(command), capture_output=True, text=True, timeout=30, check=False
    )
    if out.returncode != 0:
        raise BrokerAccountError(f"`{command}` failed: {out.stderr.strip() or out.returncode}")


def device_add(
    device: str,
    *,
    room: str | None,
    passwd_file: Path,
    server_url: str | None,
    admin_user: str,
    admin_password: str | None,
    reload_command: str,
    replace: bool = False,
) -> DeviceAccount:
    """Create a device's broker account and, with `room`, assign it.

    The room is assigned first: an unknown room or a device already in another
    room stops here, before any credential exists. Then the password file,
    then the broker reload."""
    if not is_device_id(device):
        raise BrokerAccountError(f"bad device id {device!r}: 1-32 of a-z, 0-9, '-'")
    if room is not None and not is_room_id(room):
        raise BrokerAccountError(f"bad room id {room!r}: 1-32 of A-Z, a-z, 0-9, '-'")
    if device in users_in(passwd_file) and not replace:
        raise BrokerAccountError(
            f"{device} already has a broker account in {passwd_file} "
            "(--replace gives it a new password)"
        )
    if room is not None:
        if server_url is None or admin_password is None:
            raise BrokerAccountError("assigning a room needs the server URL and an admin login")
        assign_room(server_url, admin_user, admin_password, device, room)
    account = DeviceAccount(device, room, new_password())
    set_password(passwd_file, device, account.password)
    if reload_command:
        reload_broker(reload_command)
    return account


def node_config_json(account: DeviceAccount, broker_host: str, broker_port: int) -> str:
    return json.dumps(account.node_config(broker_host, broker_port), indent=2)
