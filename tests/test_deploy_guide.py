"""deploy/README.md, followed word for word: its shell blocks are read out of
the guide and run as they stand, with only the machine's paths and ports
moved into a temp dir (the `MOVED` table below).

- Step 2 in a fresh venv: the dashboard's npm libraries, a non-editable
  `pip install .` (pip builds the wheel), the shipped deploy/mamaroom.toml,
  the example rooms and site files, `mamaroom rooms check`.
- Step 4's broker is the shipped Mosquitto config (tests/security/broker.py).
- Step 6: the env files and the shipped systemd units, started by
  `systemctl enable --now`, the first admin account, `curl …/readyz`.
- Step 7: a node's broker account and room (`mamaroom device add`).
- Step 8: the pages and the API answer, `mamaroom_gateway_up` is 1, and a
  press of that node's call button is acknowledged to it and paged.

systemd and sudo cannot run here, so two small stand-ins on PATH play them:
`systemctl` starts a unit the way systemd reads it (Environment=,
EnvironmentFile=, WorkingDirectory=, ExecStart=) and `reload mosquitto`
sends the broker SIGHUP; `sudo -u USER` runs the command as this user.
Everything they start is the installed package, from the installed venv.

Measured before: `pip install .` then `mamaroom server` crashed (the pages
were looked for in the source tree), and the guide named a `mamaroom
device-add` command that did not exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any

import httpx
import pytest

from mamaroom.contract import Kind, device_topic
from tests.security.broker import Client, ProductionBroker
from tests.support import ROOT, free_port, wait_for
from tests.test_espa import PagingSystem

GUIDE = ROOT / "deploy" / "README.md"


def guide_block(heading: str) -> str:
    """The first ```sh block under the guide's `heading`."""
    text = GUIDE.read_text(encoding="utf-8")
    at = text.index(heading)
    match = re.search(r"```sh\n(.*?)```", text[at:], re.DOTALL)
    assert match, f"no shell block under {heading!r} in {GUIDE}"
    return match.group(1)


def moved(text: str, root: Path, port: int, broker: ProductionBroker) -> str:
    """The guide's text with the machine's paths and ports moved into `root`."""
    for old, new in (
        ("/opt/mamaroom", f"{root}/opt/mamaroom"),
        ("/etc/mamaroom", f"{root}/etc/mamaroom"),
        ("/var/lib/mamaroom", f"{root}/var/lib/mamaroom"),
        ("/etc/systemd/system", f"{root}/etc/systemd/system"),
        ("/etc/mosquitto/mamaroom/", f"{broker.etc}/"),
        ("127.0.0.1:8000", f"127.0.0.1:{port}"),
        ("mqtt://127.0.0.1:1883", broker.url),
        ("port = 8000", f"port = {port}"),
    ):
        text = text.replace(old, new)
    return text


SYSTEMCTL = '''\
#!{python}
"""systemctl, as far as deploy/README.md uses it (tests/test_deploy_guide.py)."""
import os, shlex, signal, subprocess, sys
root = {root!r}
args = sys.argv[1:]
if args == ["daemon-reload"]:
    sys.exit(0)
if args == ["reload", "mosquitto"]:
    os.kill({broker_pid}, signal.SIGHUP)
    sys.exit(0)
if args[:2] != ["enable", "--now"]:
    sys.exit(f"systemctl stand-in: {{args}} is not in the guide")
for name in args[2:]:
    unit = open(f"{{root}}/etc/systemd/system/{{name}}.service").read().replace("\\\\\\n", "")
    env, files, cwd, cmd = dict(os.environ), {{}}, "/", None
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            env.update(kv.split("=", 1) for kv in shlex.split(value))
        elif key == "EnvironmentFile":
            for row in open(value):
                row = row.strip()
                if row and not row.startswith("#"):
                    k, _, v = row.partition("=")
                    files[k] = v
        elif key == "WorkingDirectory":
            cwd = value
        elif key == "ExecStart":
            cmd = shlex.split(value)
    env.update(files)  # systemd: EnvironmentFile= overrides Environment=
    log = open(f"{{root}}/log/{{name}}.log", "ab")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    open(f"{{root}}/run/{{name}}.pid", "w").write(str(proc.pid))
'''

SUDO = """\
#!/bin/sh
# sudo -u USER CMD...: run CMD as this user (tests/test_deploy_guide.py).
[ "$1" = "-u" ] || {{ echo "sudo stand-in: only -u USER" >&2; exit 2; }}
shift 2
exec "$@"
"""


def run_sh(script: str, root: Path, env: dict[str, str], cwd: Path, **kw: Any) -> str:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,  # no controlling tty: a password prompt reads stdin
        **kw,
    )
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return str(proc.stdout)


def stop_units(pids: list[int]) -> None:
    """As `systemctl stop`: SIGTERM to each unit's process group, SIGKILL after 30 s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def copy_tree(dest: Path) -> None:
    """What `git clone` of this tree gives (with uncommitted work), minus
    dashboard/vendor and node_modules, which the guide builds itself."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.timeout(1500)
def test_the_deploy_guide_word_for_word(tmp_path: Path) -> None:
    root = tmp_path / "machine"
    for d in ("opt/mamaroom", "etc/mamaroom", "var/lib/mamaroom", "etc/systemd/system"):
        (root / d).mkdir(parents=True)
    (root / "log").mkdir()
    (root / "run").mkdir()
    broker = ProductionBroker(tmp_path / "broker").start()
    assert broker.proc is not None
    port = free_port()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        SYSTEMCTL.format(python=sys.executable, root=str(root), broker_pid=broker.proc.pid)
    )
    (bin_dir / "sudo").write_text(SUDO.format())
    for tool in ("systemctl", "sudo"):
        (bin_dir / tool).chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAMAROOM_", "VIRTUAL_ENV"))},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    # Not the test's venv: the guide's own python3 and its fresh .venv.
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(ROOT)))
    opt = root / "opt" / "mamaroom"
    pager_master, pager_slave = os.openpty()
    tty.setraw(pager_master)
    paging = PagingSystem(pager_master, block=None)
    paging.start()
    started: list[int] = []
    try:
        # Step 2. `git clone` is this tree, copied; the rest runs as written.
        step2 = guide_block("### 2. mamaroom itself")
        assert step2.startswith("git clone ")
        copy_tree(opt)
        t0 = time.monotonic()
        out = run_sh(moved(step2.split("\n", 1)[1], root, port, broker), root, env, opt)
        print(f"step 2 (fresh venv, npm, pip install .): {time.monotonic() - t0:.0f} s")
        assert "all rows valid" in out, out
        installed = opt / ".venv" / "bin" / "python"
        where = subprocess.run(
            [str(installed), "-c", "import server, dashboard; print(server.__file__)"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "site-packages" in where, f"not a real install: {where}"

        # "Edit /etc/mamaroom/mamaroom.toml. At least fill in the duty roster
        # and the paging": pager 101 on a serial line (a pty, the paging system
        # on its far end), always on duty.
        toml = root / "etc/mamaroom/mamaroom.toml"
        assert toml.read_text() == (ROOT / "deploy/mamaroom.toml").read_text()
        text = moved(toml.read_text(), root, port, broker)  # this machine's paths and ports
        shipped_port = 'port = ""'
        assert shipped_port in text
        text = text.replace(shipped_port, f'port = "{os.ttyname(pager_slave)}"', 1)
        text = text.replace(
            "roster = []\n", '[[escalation.roster]]\nname = "值班员"\npager = "101"\n', 1
        )
        toml.write_text(text)

        # Step 6, up to "Edit … the passwords from step 4", then the rest.
        step6 = moved(guide_block("### 6. The gateway and the server"), root, port, broker)
        before, after = step6.split("# Edit ", 1)
        after = after.split("\n", 2)[2]  # the two comment lines
        run_sh(before, root, env, opt)
        for unit in (root / "etc/systemd/system").glob("*.service"):
            assert unit.read_text() == (ROOT / "deploy/systemd" / unit.name).read_text()
            unit.write_text(moved(unit.read_text(), root, port, broker))
        for process in ("gateway", "server"):
            f = root / f"etc/mamaroom/{process}.env"
            body = f.read_text()
            assert "MAMAROOM_MQTT__PASSWORD=\n" in body
            f.write_text(
                body.replace(
                    "MAMAROOM_MQTT__PASSWORD=\n",
                    f"MAMAROOM_MQTT__PASSWORD={broker.passwords[f'mamaroom.{process}']}\n",
                )
            )
        admin_password = "lamp-on-the-third-floor"
        # The admin account "asks for its password": twice, on stdin here.
        script, readyz = after.rsplit("curl", 1)
        run_sh(script, root, env, opt, input=f"{admin_password}\n{admin_password}\n")
        started = [int(p.read_text()) for p in (root / "run").glob("*.pid")]
        # The calls server, the web server, the gateway.
        assert len(started) == 3, started
        base = f"http://127.0.0.1:{port}"

        def logs() -> str:
            return "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                for p in (root / "log").glob("*.log")
            )

        def curl_readyz() -> bool:
            proc = subprocess.run(
                ["bash", "-c", "curl" + readyz], env=env, capture_output=True, text=True
            )
            return re.search(r'"ready":\s*true', proc.stdout) is not None

        wait_for(
            curl_readyz,
            timeout=90,
            what="curl …/readyz says ready, as the guide expects",
            detail=logs,
        )

        # Step 7: a node's account and room.
        step7 = moved(guide_block("### 7. A broker account for each node"), root, port, broker)
        step7 = step7.replace(
            "MAMAROOM_ADMIN_PASSWORD=...", f"MAMAROOM_ADMIN_PASSWORD={admin_password}"
        )
        step7 = step7.replace("--broker-host mqtt.park.example", "--broker-host 127.0.0.1")
        # The devices' password file of step 4, moved like the rest.
        run_sh(
            step7,
            root,
            {**env, "MAMAROOM_BROKER_PASSWD_FILE": str(broker.devices_passwd)},
            tmp_path,
        )
        node_conf = json.loads((tmp_path / "n-sp1-0301.json").read_text())
        assert node_conf["device"] == "n-sp1-0301"

        # Step 8: pages, API, the gateway's heartbeat, a call.
        with httpx.Client(base_url=base, timeout=30) as http:
            for path in ("/", "/r/SP1-0301", "/staff", "/trends", "/admin", "/static/style.css"):
                assert http.get(path).status_code == 200, path
            assert http.get("/vendor/echarts.min.js").status_code == 200
            rooms = http.get("/api/rooms").json()
            assert any(r["id"] == "SP1-0301" for r in rooms), rooms
            wait_for(
                lambda: re.search(
                    r"^mamaroom_gateway_up(\{[^}]*\})? 1", http.get("/metrics").text, re.M
                ),
                timeout=60,
                what="mamaroom_gateway_up 1 (step 8)",
                detail=logs,
            )
            token = http.post(
                "/api/auth/token", data={"username": "admin", "password": admin_password}
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            node = Client(broker, "n-sp1-0301", node_conf["password"], clean=False)
            node.connect()
            node.subscribe(device_topic("n-sp1-0301", Kind.CMD))
            press = {
                "v": 1,
                "boot": 1,
                "seq": 1,
                "ts": int(time.time() * 1000),
                "action": "press",
                "call_id": "guide-1",
            }
            node.publish(device_topic("n-sp1-0301", Kind.CALL), json.dumps(press).encode())
            wait_for(
                lambda: any(
                    json.loads(m.payload).get("status") == "received" for m in node.messages
                ),
                timeout=30,
                what="`received` at the node",
                detail=logs,
            )
            wait_for(lambda: paging.blocks, timeout=30, what="pager 101 paged", detail=logs)
            # Raised by the calls server, shown by the web server (the shipped
            # ACL lets the servers tell each other).
            wait_for(
                lambda: (
                    [
                        a["room"]
                        for a in http.get(
                            "/api/alerts", headers=auth, params={"kind": "call"}
                        ).json()
                    ]
                    == ["SP1-0301"]
                ),
                timeout=30,
                what="the call on the web server's console",
                detail=logs,
            )
            node.close()

            # The calls server stops: the web server is not ready, and says why
            # (the watchdog polls it and pages).
            calls_pid = int((root / "run/mamaroom-calls.pid").read_text())
            os.killpg(calls_pid, signal.SIGTERM)
            wait_for(
                lambda: "calls_server" in http.get("/readyz").json()["checks"],
                timeout=30,
                what="/readyz names the missing calls server",
                detail=logs,
            )
            assert http.get("/readyz").status_code == 503
    finally:
        stop_units(started)
        paging.stop.set()
        paging.join(5)
        os.close(pager_master)
        os.close(pager_slave)
        broker.stop()


def test_every_mamaroom_command_in_the_guide_exists() -> None:
    """Each `mamaroom …` command line in deploy/README.md names a real
    command (its --help works): the guide once told people to run
    `mamaroom device-add`."""
    text = GUIDE.read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.DOTALL)).replace("\\\n", " ")
    commands = set()
    for line in blocks.splitlines():
        m = re.search(
            r"(?:^|/bin/)mamaroom ((?:[a-z][a-z-]*(?:\s+|$))+)", line.split("#")[0].strip()
        )
        if m:
            commands.add(tuple(m.group(1).split()[:2]))
    assert ("user", "add") in commands, commands  # the parse finds what is there
    exe = Path(sys.executable).with_name("mamaroom")

    def help_of(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *words, "--help"], capture_output=True, text=True, timeout=60
        )

    for words in sorted(commands):
        if help_of(*words).returncode == 0:
            continue
        # `mamaroom qr SOMETHING`: a command and its argument, not a group and a command.
        one = help_of(words[0])
        assert one.returncode == 0 and "Commands" not in one.stdout, (
            f"deploy/README.md runs `mamaroom {' '.join(words)}`, which is no command"
        )
