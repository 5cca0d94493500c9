"""`mamaroom demo`: the whole system on one machine, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time

import httpx
from rich.console import Console
from rich.panel import Panel

from cli.embedded_broker import EmbeddedBroker, broker_answers
from cli.history import seed_demo
from mamaroom.config import Settings

console = Console(stderr=True)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


async def run_demo(settings: Settings, *, rooms: int, speed: float) -> int:  # noqa: C901 (the demo's start-up and shutdown, in order)
    mqtt = settings.mqtt
    broker: EmbeddedBroker | None = None
    if broker_answers(mqtt.host, mqtt.port):
        console.print(f"[green]✓[/green] using the MQTT broker at {mqtt.url}")
    elif mqtt.host in LOCAL_HOSTS and not mqtt.tls:
        broker = EmbeddedBroker(mqtt.host, mqtt.port)
        await broker.start()
        console.print(f"[green]✓[/green] no broker answered at {mqtt.url}: started an embedded one")
    else:
        console.print(
            f"[red]no MQTT broker answers at {mqtt.url}[/red] "
            "(an embedded one can only listen on this machine)"
        )
        return 1

    env = dict(os.environ)
    # The demo's own admin account with a fresh random password, printed
    # below; there is never a fixed default password.
    password = secrets.token_urlsafe(12)
    add = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "user",
        "add",
        "admin",
        "--role",
        "admin",
        "--password-stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env=env,
    )
    await add.communicate((password + "\n").encode())
    if add.returncode != 0:
        console.print("[red]could not create the demo's admin account[/red]")
        return 1
    # A demo pages nobody unless the site configured paging: the server
    # would refuse to start without this, and the panel below says so.
    from server.services.escalation import refuse_unpaged

    unpaged = refuse_unpaged(settings) is not None
    if unpaged:
        env["MAMAROOM_PAGING__ALLOW_NO_TARGET"] = "true"
    quiet = {**env, "MAMAROOM_LOG__LEVEL": "warning"}
    services = [("server", ["server"], env), ("gateway", ["gateway"], env)]
    # About six calls an hour across the park: enough to watch, not a flood.
    call_every_h = rooms * speed / 6
    simulator = (
        "simulate",
        [
            "simulate",
            "--rooms",
            str(rooms),
            "--speed",
            str(speed),
            "--call-every",
            f"{call_every_h:.0f}",
        ],
        quiet,
    )
    procs: list[tuple[str, asyncio.subprocess.Process]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    seeding: asyncio.Task[None] | None = None

    async def start(name: str, args: list[str], child_env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", *args, env=child_env
        )
        procs.append((name, proc))
        console.print(f"[green]✓[/green] started {name} (pid {proc.pid})")

    url = f"http://{settings.http.host}:{settings.http.port}"
    gw = settings.gateway
    # The rooms start once the gateway listens, so their first words are not lost.
    checks = [f"{url}/readyz"]
    if gw.metrics_port:
        checks.append(f"http://{gw.metrics_host}:{gw.metrics_port}/metrics")
    try:
        for service in services:
            await start(*service)
        ready = await _wait_ready(checks, procs, stop)
        if ready:
            # Weeks of past for the trends, written beside the live rooms
            # (cli/history.py): it ends where they begin.
            seeding = asyncio.create_task(
                seed_demo(
                    settings,
                    rooms,
                    int(time.time() * 1000),
                    lambda text: console.print(text, markup=False),
                )
            )
            await start(*simulator)
        if not ready:
            code = 1
        else:
            console.print(
                Panel.fit(
                    f"[bold]mamaroom is running[/bold]: {rooms} simulated rooms "
                    f"at {speed:g}× speed\n\n"
                    f"  rooms page   {url}/\n  staff        {url}/staff\n"
                    f"  trends       {url}/trends\n  admin        {url}/admin\n"
                    f"  API          {url}/api/rooms\n"
                    f"  live stream  {url}/api/stream\n  API schema   {url}/openapi.json\n"
                    f"  staff login  admin / {password}  (POST {url}/api/auth/token)\n\n"
                    + (
                        "[yellow]Paging is off in this demo (paging.allow_no_target): emergency "
                        'calls reach\nonly the staff console, marked "nobody to page".[/yellow]\n\n'
                        if unpaged
                        else ""
                    )
                    + "Press Ctrl-C to stop.",
                    border_style="green",
                )
            )
            exited = asyncio.create_task(_first_exit(procs))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                name, rc = exited.result()
                console.print(f"[red]{name} exited with code {rc}; stopping the demo[/red]")
                code = 1
            for task in (exited, stopped):
                task.cancel()
    finally:
        console.print("stopping…")
        if seeding is not None:
            seeding.cancel()
            await asyncio.gather(seeding, return_exceptions=True)
        await _stop_all(procs)
        if broker is not None:
            await broker.stop()
        console.print("[green]✓[/green] stopped")
    return code


async def _first_exit(procs: list[tuple[str, asyncio.subprocess.Process]]) -> tuple[str, int]:
    waits = {asyncio.create_task(p.wait()): name for name, p in procs}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    first = done.pop()
    return waits[first], first.result()


async def _is_ready(client: httpx.AsyncClient, url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        r = await client.get(url)
        if url.endswith("/metrics"):
            return "mamaroom_gateway_ready 1.0" in r.text
        return r.status_code == 200
    return False


async def _wait_ready(
    urls: list[str],
    procs: list[tuple[str, asyncio.subprocess.Process]],
    stop: asyncio.Event,
    timeout_s: float = 90,
) -> bool:
    """Poll server readiness and the gateway's `ready` gauge until both say yes."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while asyncio.get_running_loop().time() < deadline and not stop.is_set():
            for name, proc in procs:
                if proc.returncode is not None:
                    console.print(f"[red]{name} exited with code {proc.returncode}[/red]")
                    return False
            if all([await _is_ready(client, u) for u in urls]):
                return True
            await asyncio.sleep(0.5)
    if not stop.is_set():
        console.print(f"[red]not ready in {timeout_s:.0f} s: {', '.join(urls)}[/red]")
    return False


async def _stop_all(procs: list[tuple[str, asyncio.subprocess.Process]]) -> None:
    for _, proc in reversed(procs):
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in reversed(procs):
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            console.print(f"[yellow]{name} did not stop in 10 s; killing it[/yellow]")
            proc.kill()
            await proc.wait()
