"""A production install: the wheel built from this tree (`pip install .`,
not editable), run from outside the source tree, serves its pages.

Measured on main before: `pip install .` and `mamaroom server` failed with
`RuntimeError: Directory '…/site-packages/dashboard/static' does not exist`
(the pages were found relative to the source tree), and under systemd's
`Restart=always` it restarted forever."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from tests.support import ROOT, Mosquitto, free_port, wait_for, write_rooms_csv


def test_the_built_wheel_serves_its_pages_away_from_the_source_tree(
    broker: Mosquitto, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dist.glob("mamaroom-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "dashboard/index.html",
        "dashboard/staff.html",
        "dashboard/sw.js",
        "dashboard/static/style.css",
        "dashboard/static/mothers.js",
        "dashboard/vendor/echarts.min.js",
        "server/app.py",
        "cli/main.py",
    ):
        assert needed in names, needed
    assert not any(n.startswith("dashboard/node_modules") for n in names)
    target = tmp_path / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    away = tmp_path / "elsewhere"  # not the source tree: nothing found from there
    away.mkdir()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAMAROOM_")},
        "PYTHONPATH": str(target),
        "MAMAROOM_MQTT__URL": broker.url,
        "MAMAROOM_HTTP__PORT": str(port),
        "MAMAROOM_DATA_DIR": str(away / "data"),
        "MAMAROOM_ROOMS_CSV": str(write_rooms_csv(away / "rooms.csv", [("T1-0101", None)])),
        "MAMAROOM_PAGING__ALLOW_NO_TARGET": "true",
    }
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import server, dashboard; print(server.__file__); print(dashboard.__file__)",
        ],
        env=env,
        cwd=away,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout
    log = (away / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "server"],
        env=env,
        cwd=away,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{base}/readyz").status_code == 200,
            timeout=60,
            what="the installed server ready",
            detail=lambda: (away / "server.log").read_text(errors="replace"),
        )
        for path in ("/", "/staff", "/static/style.css", "/vendor/echarts.min.js", "/sw.js"):
            assert httpx.get(base + path).status_code == 200, path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_no_dependency_ships_a_top_level_name_of_ours() -> None:
    """Our top-level packages (cli, paging, watchdog, …) share site-packages
    with every dependency: a dependency that ships one of these names would
    shadow ours or be shadowed (PyPI's `watchdog` is one)."""
    import importlib.metadata
    import tomllib

    ours = {
        p.split(".")[0]
        for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    }
    owners = importlib.metadata.packages_distributions()
    clashes = {
        name: owners[name] for name in ours if any(d != "mamaroom" for d in owners.get(name, []))
    }
    assert not clashes, clashes
