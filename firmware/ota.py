# Over-the-air update (docs/firmware-ota.md), loaded only when an `ota`
# command comes: {"cmd": "ota", "url": "http://...", "sha256": "<hex>",
# "version": "1.2.0", "size": <bytes, optional>}.
#
# The bundle is streamed over plain HTTP/1.0 into the OTA slot that is not
# running (ota/a or ota/b), CHUNK bytes at a time, its sha256 taken on the
# way; the heap never holds more than one chunk of it. Only when the whole
# bundle matches the command's sha256, as downloaded and again as read back
# from the flash, is var/fw.json pointed at the slot, on trial, and the
# board restarted. loader.py then runs the update; trial.py rolls it back if
# it is not online within ota_confirm_s. Anything wrong (HTTP error, size,
# hash, a call open) refuses the update: the node runs on as it was and says
# why in telemetry (`ota`). main.py, loader.py and trial.py (and boot.py)
# are never replaced: they are what rolls an update back.
#
# The bundle: b"MRFW1\n", then one line of JSON
#   {"version": "1.2.0", "mpy": [6, 3] or null, "files": [[path, size], ...]}
# then the files' bytes one after the other, in the manifest's order.
import asyncio
import gc
import hashlib
import json
import os
import socket
import sys
from binascii import hexlify

from log import log
from mqtt import _io
from store import load, save
from version import VERSION

MAGIC = b"MRFW1\n"
SLOTS = ("ota/a", "ota/b")
KEEP = ("main", "loader", "trial", "boot")  # the root's own: never in a bundle
MAX_BUNDLE = 1 << 20
MAX_MANIFEST = 4096
TIMEOUT_MS = 120000  # the whole download; a stalled server does not hold the update for ever
CHUNK = 512


class OTAError(Exception):
    pass


async def update(node, cmd):
    """Download, verify, install into the free slot and restart on trial;
    OTAError (or an OSError) says why not."""
    url, want, version = check(cmd)
    if version == VERSION:
        raise OTAError("already on " + version)
    fw = load("fw") or {}
    if fw.get("state") == "trial":
        raise OTAError("an update is on trial")
    _idle(node)
    cur = fw.get("slot") or ""
    slot = SLOTS[1] if cur == SLOTS[0] else SLOTS[0]
    log("INFO", "ota: %s -> %s: %s into %s" % (VERSION, version, url, slot))
    gc.collect()
    try:
        await asyncio.wait_for_ms(fetch(url, want, version, slot, cmd.get("size")), TIMEOUT_MS)
        _idle(node)  # a call that came during the download: no restart now
    except asyncio.TimeoutError:  # noqa: UP041 (MicroPython's own, not the builtin)
        clear(slot)
        raise OTAError("download took over %d s" % (TIMEOUT_MS // 1000)) from None
    except BaseException:
        clear(slot)  # the flash back; nothing points at the slot
        raise
    save("fw", {"slot": slot, "state": "trial", "version": version, "boots": 0,
                "prev": cur, "prev_version": VERSION})
    save("reset", "ota")
    log("INFO", "ota: %s verified in %s; restarting on trial" % (version, slot))
    from board import module

    module().reset()


def check(cmd):
    """(url, sha256, version) of a well-formed command."""
    url, sha, version = cmd.get("url"), cmd.get("sha256"), cmd.get("version")
    if not isinstance(url, str) or not url.startswith("http://") or len(url) > 256:
        raise OTAError("url must be http://...")
    if not _hex64(sha):
        raise OTAError("sha256 must be 64 hex digits")
    if not isinstance(version, str) or not 1 <= len(version) <= 32:
        raise OTAError("bad version")
    size = cmd.get("size")
    if size is not None and (type(size) is not int or not 0 < size <= MAX_BUNDLE):
        raise OTAError("bad size %r" % size)
    return url, sha.lower(), version


def _hex64(s):
    if not isinstance(s, str) or len(s) != 64:
        return False
    for c in s.lower():
        if c not in "0123456789abcdef":
            return False
    return True


def _idle(node):
    if node.calls.active():
        raise OTAError("a call is open")


def parse_url(url):
    """(host, port, path) of http://host[:port]/path."""
    rest = url[7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, port = hostport, 80
    if ":" in hostport:
        host, p = hostport.rsplit(":", 1)
        port = int(p) if p.isdigit() else 0
    if not host or not 0 < port < 65536 or " " in path:
        raise OTAError("bad url")
    return host, port, path


async def fetch(url, want, version, slot, size=None):
    """The bundle at `url`, into `slot`, verified."""
    host, port, path = parse_url(url)
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]  # blocking DNS on the board
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno not in (115, 119):  # EINPROGRESS (Linux, lwIP)
                raise
        r = Reader(s)
        await r.send(("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: mamaroom-node/%s\r\n\r\n"
                      % (path, host, VERSION)).encode())
        length = await _headers(r)
        if size is not None and length != size:
            raise OTAError("bad size: %d bytes offered, %d expected" % (length, size))
        if length > MAX_BUNDLE:
            raise OTAError("bad size: %d bytes is too big" % length)
        h = hashlib.sha256()
        line = await r.line(len(MAGIC))
        if line != MAGIC:
            raise OTAError("not a bundle")
        h.update(line)
        line = await r.line(MAX_MANIFEST)
        h.update(line)
        try:
            files = manifest(json.loads(line), version)
        except ValueError:
            raise OTAError("bad manifest") from None
        total = len(MAGIC) + len(line)
        for f in files:
            total += f[1]
        if total != length:
            raise OTAError("bad size: manifest says %d bytes, HTTP %d" % (total, length))
        clear(slot)
        _room(slot, files)
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        for name, n in files:
            _mkdirs(slot, name)
            with open(slot + "/" + name, "wb") as out:  # noqa: ASYNC230 (no async files here)
                while n:
                    k = await r.into(mv[:min(n, CHUNK)])
                    if not k:
                        raise OTAError("bad size: the download ended early")
                    h.update(mv[:k])
                    out.write(mv[:k])
                    n -= k
        got = hexlify(h.digest()).decode()
        if got != want:
            raise OTAError("sha256 mismatch: got %s..., want %s..." % (got[:12], want[:12]))
        # What the flash holds, not what was written: the bundle again, from it.
        h = hashlib.sha256(MAGIC)
        h.update(line)
        for f in files:
            _hash_file(h, slot + "/" + f[0], buf)
        if hexlify(h.digest()).decode() != want:
            raise OTAError("flash: the files read back wrong")
    finally:
        s.close()


async def _headers(r):
    """The status line and headers; the body's length."""
    status = await r.line(256)
    parts = status.split()
    if len(parts) < 2 or parts[1] != b"200":
        raise OTAError("HTTP " + b" ".join(parts[1:]).decode())  # "HTTP 404 Not Found"
    length = None
    while True:
        line = await r.line(1024)
        if line in (b"\r\n", b"\n"):
            break
        kv = line.split(b":", 1)
        if len(kv) == 2 and kv[0].strip().lower() == b"content-length":
            length = int(kv[1].strip())
    if length is None:
        raise OTAError("bad size: no Content-Length")
    return length


def manifest(man, version):
    """The manifest's files, every entry checked: [[path, size], ...]."""
    if not isinstance(man, dict) or man.get("version") != version:
        raise OTAError("the bundle is not version %s" % version)
    mpy = man.get("mpy")
    ours = getattr(sys.implementation, "_mpy", None)
    if mpy and ours is not None and mpy != [ours & 0xFF, ours >> 8 & 3]:
        raise OTAError(".mpy v%d.%d; this board runs v%d.%d" % (
            mpy[0], mpy[1], ours & 0xFF, ours >> 8 & 3))
    files = man.get("files")
    if not isinstance(files, list) or not files:
        raise OTAError("bad manifest: no files")
    names = []
    for f in files:
        if not isinstance(f, list) or len(f) != 2 or not safe_path(f[0]) \
                or type(f[1]) is not int or f[1] < 0:
            raise OTAError("bad manifest entry %r" % (f,))
        names.append(f[0])
    if "app.mpy" not in names and "app.py" not in names:
        raise OTAError("bad manifest: no app")
    return files


def safe_path(p):
    """A module path inside the slot: no '..', no absolute path, no file of
    the root's own (main, loader, trial, boot)."""
    if not isinstance(p, str) or not 1 <= len(p) <= 64:
        return False
    parts = p.split("/")
    if len(parts) > 3:
        return False
    for part in parts:
        if not part or part[0] == ".":
            return False
        for c in part:
            if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "_.-"):
                return False
    se = parts[-1].rsplit(".", 1)
    if len(se) != 2 or se[1] not in ("py", "mpy") or not se[0]:
        return False
    return not (len(parts) == 1 and se[0] in KEEP)


def _hash_file(h, path, buf):
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return
            h.update(mv[:n])


def _mkdirs(slot, name):
    d = slot
    for part in name.split("/")[:-1]:
        d += "/" + part
        try:
            os.mkdir(d)
        except OSError:
            pass


def _room(slot, files):
    """Enough free flash for the files (whole blocks each, and some)."""
    try:
        st = os.statvfs(slot)
    except (AttributeError, OSError):
        return
    bs = st[0] or 4096
    need = 4 * bs
    for f in files:
        need += (f[1] // bs + 2) * bs
    if st[0] * st[3] < need:
        raise OTAError("flash: %d bytes free, %d needed" % (st[0] * st[3], need))


def clear(slot):
    """The slot, empty (made if missing)."""
    for d in ("ota", slot):
        try:
            os.mkdir(d)
        except OSError:
            pass
    _rmtree(slot, False)


def _rmtree(d, self_too=True):
    for e in os.ilistdir(d):
        p = d + "/" + e[0]
        if e[1] == 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    if self_too:
        os.rmdir(d)


class Reader:
    """A non-blocking socket, read a line or a buffer at a time (asyncio
    waits for it to be readable, as mqtt.py does)."""

    def __init__(self, s):
        self.s = s
        self.pend = b""

    async def send(self, data):
        while data:
            n = self.s.write(data)
            if n is None:
                await _io(self.s, True)
            else:
                data = data[n:]

    async def line(self, limit):
        while b"\n" not in self.pend:
            if len(self.pend) > limit:
                raise OTAError("bad bundle: a line over %d bytes" % limit)
            d = self.s.read(CHUNK)
            if d is None:
                await _io(self.s)
            elif not d:
                raise OTAError("bad size: the download ended early")
            else:
                self.pend += d
        i = self.pend.find(b"\n") + 1
        out = self.pend[:i]
        self.pend = self.pend[i:]
        return out

    async def into(self, mv):
        """Some bytes into memoryview mv: how many (0 at the end)."""
        if self.pend:
            n = min(len(mv), len(self.pend))
            mv[:n] = self.pend[:n]
            self.pend = self.pend[n:]
            return n
        while True:
            n = self.s.readinto(mv)
            if n is not None:
                return n
            await _io(self.s)
