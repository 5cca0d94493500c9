"""The firmware type-checks against the MicroPython ESP32 stubs (PyPI
micropython-esp32-stubs): board/esp32.py, which cannot run here, is at
least checked against the real board's API. Only it touches hardware, and
its pins are hardware/pins.md's."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.firmware.mpy import FIRMWARE, sources

HARDWARE = {"machine", "network", "esp32", "esp", "bluetooth"}


def stub_files(dist: str) -> list[tuple[Path, Path]]:
    """(installed file, its path in the distribution) for each .pyi of `dist`."""
    files = importlib.metadata.files(dist) or []
    return [(Path(str(f.locate())), Path(str(f))) for f in files if str(f).endswith(".pyi")]


def test_the_firmware_type_checks_against_the_esp32_stubs(tmp_path: Path) -> None:
    # The stubs install .pyi files at the top of site-packages (machine.pyi,
    # time.pyi, ...) and a MicroPython stdlib (stdlib/): gathered apart, so
    # the check sees MicroPython's modules and not CPython's.
    stubs = tmp_path / "stubs"
    typeshed = None
    modules: set[str] = set()
    for dist in ("micropython-esp32-stubs", "micropython-stdlib-stubs"):
        for src, rel in stub_files(dist):
            if rel.parts[0] == "stdlib":
                typeshed = src.parents[len(rel.parts) - 1]
                continue
            dest = stubs / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            modules.add(".".join(rel.with_suffix("").parts).removesuffix(".__init__"))
    assert typeshed is not None and "machine" in modules and "network" in modules
    config = tmp_path / "mypy.ini"
    config.write_text(
        "\n".join(
            [
                "[mypy]",
                "python_version = 3.11",
                "no_site_packages = True",
                "explicit_package_bases = True",
                "check_untyped_defs = True",
                "exclude = (^|/)(tests|build)/",
                # Errors inside the stubs themselves are theirs, not the firmware's.
                f"[mypy-{','.join(sorted(modules))}]",
                "ignore_errors = True",
                "",
            ]
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--custom-typeshed-dir",
            str(typeshed),
            "--cache-dir",
            str(tmp_path / "cache"),
            ".",
        ],
        cwd=FIRMWARE,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Every firmware module was checked (board/esp32.py among them), none skipped.
    assert f"no issues found in {len(sources())} source files" in out.stdout, out.stdout


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


#: The services' packages and the libraries only they use: none belongs on a node.
SERVICES = {
    "mamaroom",
    "paging",
    "gateway",
    "server",
    "watchdog",
    "simulator",
    "cli",
    "dashboard",
    "tests",
    "bench",
    "pydantic",
    "fastapi",
    "paho",
    "aiomqtt",
    "httpx",
}


def test_the_firmware_imports_nothing_of_the_services() -> None:
    """The node's side of the layers (the services' are import-linter's
    contracts in pyproject.toml): the contract reaches the firmware as its
    own mirror (firmware/contract.py, tests/firmware/test_logic.py), never as
    an import."""
    for path in sources():
        bad = imported(path) & SERVICES
        assert not bad, f"{path.relative_to(FIRMWARE)} imports {sorted(bad)}"


def test_only_the_esp32_board_touches_hardware() -> None:
    for path in sources():
        rel = path.relative_to(FIRMWARE).as_posix()
        hw = imported(path) & HARDWARE
        if rel == "board/esp32.py":
            assert {"machine", "network"} <= hw
        elif rel == "main.py":  # the watchdog armed first, and a reset that imports nothing
            assert hw <= {"machine"}, f"{rel} imports {hw}"
        else:
            assert not hw, f"{rel} imports {hw}"


def test_the_pins_are_the_pin_map_of_hardware_pins_md() -> None:
    spec = importlib.util.spec_from_file_location("firmware_config", FIRMWARE / "config.py")
    assert spec and spec.loader
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    table = (FIRMWARE.parent / "hardware" / "pins.md").read_text()
    documented = {
        m[2]: int(m[1])
        for m in re.finditer(r"^\|[^|]*\| \*\*GPIO(\d+)\*\* \|.*\| `(\w+)` \|$", table, re.M)
    }
    assert documented == config.PINS
    example = (FIRMWARE / "config.example.json").read_text()
    for key, gpio in config.PINS.items():
        assert f'"{key}": {gpio}' in example, key
    esp32 = (FIRMWARE / "board" / "esp32.py").read_text()
    for key in config.PINS:  # every pin the map names, the board uses
        assert f'p["{key}"]' in esp32, key
