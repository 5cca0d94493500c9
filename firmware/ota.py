# Over-the-air update (docs/firmware-ota.md), loaded only when an `ota`
# command comes: {"cmd": "ota", "url": "http://...", "sha256": "<hex>",
# "version": "1.2.0", "size": <bytes, optional>}.
#
# The bundle is streamed over plain HTTP/1.0 into the OTA slot that is not
# running (ota-a or ota-b), CHUNK bytes at a time, its sha256 taken on the
# way; the heap never holds more than a chunk of it. Only when the whole
# bundle matches the command's sha256, as downloaded and again as read back
# from the flash, is var/fw.json pointed at the slot, on trial, and the
# board restarted. loader.py then runs the update; trial.py rolls it back if
# it is not online within ota_confirm_s. Anything wrong (HTTP error, size,
# hash, full flash, a call open) refuses the update: the node runs on as it
# was, and says why in telemetry (`ota`, set by commands.py from the
# exception). main.py, loader.py, trial.py and boot.py are never replaced:
# they are what rolls an update back.
#
# The bundle: b"MRFW1\n", one line of JSON
#   {"version": "1.2.0", "mpy": [6, 3] or null, "files": [[path, size], ...]}
# then the files' bytes one after the other, in the manifest's order.
#
# Small on purpose: a node in a 64 KB heap has ~10 KB free, and all of this
# module is in the heap while it runs (hence plain functions, no class, and
# ValueError for every refusal).
import asyncio
import gc
import hashlib
import json
import os
import socket
import sys
from binascii import hexlify

from contract import MAX_BUNDLE
from log import log
from mqtt import _io
from store import load, save
from version import VERSION

# Not ota/a: a folder named like a module is a package to `import ota`.
SLOTS = ("ota-a", "ota-b")
KEEP = ("main", "loader", "trial", "boot")  # the root's own: never in a bundle
TIMEOUT_MS = 120000  # the whole download: a stalled server does not hold the node for ever
CHUNK = 512  # the one buffer: a line (the manifest) must fit it


def check(cmd):
    """The `ota` command's (url, sha256, version, size), or ValueError (the
    contract's OtaCommand; `size` is held to the download's length)."""
    url, want, v, size = cmd.get("url"), cmd.get("sha256"), cmd.get("version"), cmd.get("size")
    if not (
        isinstance(url, str)
        and url.startswith("http://")
        and isinstance(want, str)
        and len(want) == 64
        and not want.lower().strip("0123456789abcdef")
        and isinstance(v, str)
        and 0 < len(v) <= 32
    ):
        raise ValueError("bad command")
    return url, want, v, size


async def update(node, cmd):
    """Download, verify, install into the free slot, restart on trial; a
    ValueError (or OSError) says why not."""
    # (commands.py forgets this module afterwards: its memory back.)
    url, want, v, size = check(cmd)
    if v == VERSION:
        raise ValueError("already on " + v)
    fw = load("fw") or {}
    if fw.get("state") == "trial":
        raise ValueError("an update is on trial")
    if node.calls.active():
        raise ValueError("a call is open")
    cur = fw.get("slot") or ""
    slot = SLOTS[1] if cur == SLOTS[0] else SLOTS[0]
    log("INFO", "ota: %s -> %s: %s into %s" % (VERSION, v, url, slot))
    gc.collect()
    try:
        await asyncio.wait_for_ms(_fetch(url[7:], want.lower(), v, slot, size), TIMEOUT_MS)
        if node.calls.active():  # one came during the download: no restart now
            raise ValueError("a call is open")
    except asyncio.TimeoutError:  # noqa: UP041 (MicroPython's own, not the builtin)
        _clear(slot)
        raise ValueError("download took over %d s" % (TIMEOUT_MS // 1000)) from None
    except BaseException:
        _clear(slot)  # the flash back; nothing points at the slot
        raise
    save(
        "fw",
        {
            "slot": slot,
            "state": "trial",
            "version": v,
            "boots": 0,
            "prev": cur,
            "prev_version": VERSION,
        },
    )
    save("reset", "ota")
    log("INFO", "ota: %s verified in %s; restarting on trial" % (v, slot))
    from board import module

    module().reset()


async def _fetch(url, want, v, slot, size):
    """http://`url` (without its scheme) into `slot`, verified. (In small
    functions: each one's bytecode is a block of the heap of its own.)"""
    buf = bytearray(CHUNK)  # first, while the heap is least cut up: lines, then chunks
    mv = memoryview(buf)
    i = url.find("/")
    hp, path = (url, "/") if i < 0 else (url[:i], url[i:])
    i = hp.find(":")
    host, port = (hp, 80) if i < 0 else (hp[:i], int(hp[i + 1 :]))
    if host.count(".") != 3 or not host.replace(".", "").isdigit():
        # A name would be looked up with a blocking call: seconds of a frozen node.
        raise ValueError("the url must name the server by IP address, not " + host)
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]  # an address: no look-up
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno not in (115, 119):  # EINPROGRESS (Linux, lwIP)
                raise
        length = await _get(s, mv, hp, path)
        if length < 0 or (size is not None and length != size) or length > MAX_BUNDLE:
            raise ValueError("bad size: %d bytes offered, %s expected" % (length, size))
        files = await _manifest(s, mv, v, slot, length)
        h = hashlib.sha256(mv[: files.pop()])
        await _files(s, mv, h, slot, files)
        got = hexlify(h.digest()).decode()
        if got != want:
            raise ValueError("sha256 mismatch: got %s..., want %s..." % (got[:12], want[:12]))
        # What the flash holds, not what was written: the bundle again, from it.
        h = hashlib.sha256()
        for name in ["manifest"] + [f[0] for f in files]:
            with open(slot + "/" + name, "rb") as f:  # noqa: ASYNC230 (no async files here)
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(mv[:k])
        if hexlify(h.digest()).decode() != want:
            raise ValueError("flash: the files read back wrong")
    finally:
        s.close()


async def _get(s, mv, hp, path):
    """The request sent, the status line and headers read: the body's length."""
    q = (
        "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: mamaroom-node/%s\r\n\r\n" % (path, hp, VERSION)
    ).encode()
    while q:
        n = s.write(q)
        if n is None:
            await _io(s, True)
        else:
            q = q[n:]
    n = await _line(s, mv)
    if bytes(mv[9:12]) != b"200":  # "HTTP/1.0 200 OK"
        raise ValueError("HTTP " + bytes(mv[9:n]).strip().decode())
    length = -1
    while n > 2:
        n = await _line(s, mv)
        if bytes(mv[:15]).lower() == b"content-length:":
            length = int(bytes(mv[15:n]))
    return length


async def _manifest(s, mv, v, slot, length):
    """The bundle's header and manifest, checked, in mv and in slot/manifest;
    its [[path, size], ...] and, last, the header and manifest's length."""
    n = await _line(s, mv)
    if bytes(mv[:n]) != b"MRFW1\n":
        raise ValueError("not a bundle")
    n += await _line(s, mv, n)
    m = json.loads(mv[6:n])
    if m.get("version") != v:
        raise ValueError("the bundle is not version " + v)
    mpy, ours = m.get("mpy"), getattr(sys.implementation, "_mpy", None)
    if mpy and ours is not None and mpy != [ours & 0xFF, ours >> 8 & 3]:
        raise ValueError(
            ".mpy v%d.%d; this board runs v%d.%d" % (mpy[0], mpy[1], ours & 0xFF, ours >> 8 & 3)
        )
    files = m["files"]
    total = n
    for name, size in files:
        if (
            ".." in name
            or name[0] == "/"
            or name.split(".")[0] in KEEP
            or not (name.endswith(".py") or name.endswith(".mpy"))
        ):
            raise ValueError("bad file in bundle: " + name)
        total += size
    if total != length:
        raise ValueError("bad size: manifest %d bytes, HTTP %d" % (total, length))
    _clear(slot)
    # Kept in the slot: the read-back hashes it from the flash too, and the
    # slot says what it holds.
    with open(slot + "/manifest", "wb") as f:  # noqa: ASYNC230
        f.write(mv[:n])
    files.append(n)
    return files


async def _files(s, mv, h, slot, files):
    """The files' bytes, chunk by chunk, into the slot and the hash."""
    for name, n in files:
        d = slot
        for part in name.split("/")[:-1]:
            d += "/" + part
            try:
                os.mkdir(d)
            except OSError:
                pass
        with open(slot + "/" + name, "wb") as f:  # noqa: ASYNC230
            while n > 0:
                k = s.readinto(mv[: min(n, CHUNK)])
                if k is None:
                    await _io(s)
                    continue
                if not k:
                    raise ValueError("bad size: the download ended early")
                h.update(mv[:k])
                f.write(mv[:k])
                n -= k


async def _line(s, mv, n=0):
    """Read a line (to its b"\\n") into mv[n:], a byte at a time (never past
    it: what follows is read straight into the buffer); its length."""
    i = n
    while i < len(mv):
        k = s.readinto(mv[i : i + 1])
        if k is None:
            await _io(s)
        elif not k:
            raise ValueError("bad size: the download ended early")
        else:
            i += 1
            if mv[i - 1] == 10:
                return i - n
    raise ValueError("bad bundle: a line over %d bytes" % len(mv))


def _clear(slot, top=True):
    """The slot, empty (made if missing)."""
    if top:
        try:
            os.mkdir(slot)
        except OSError:
            pass
    for e in os.ilistdir(slot):
        p = slot + "/" + e[0]
        if e[1] == 0x4000:
            _clear(p, False)
            os.rmdir(p)
        else:
            os.remove(p)
