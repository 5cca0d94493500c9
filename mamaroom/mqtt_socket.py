"""Socket options every mamaroom MQTT connection uses, and the gateway's
buffered socket for paho."""

from __future__ import annotations

import socket
import ssl
from typing import Any

#: No Nagle: an MQTT exchange is small packets back to back (PUBACK, then a
#: PUBLISH); with Nagle the second waits for the peer's delayed ACK (~40 ms).
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

#: Bytes read from the kernel at once: a few hundred device messages.
READ_SIZE = 65_536
#: Buffered output beyond this is sent at once rather than at the next flush.
FLUSH_AT = 65_536


def no_delay(sock: object) -> None:
    """Apply TCP_NODELAY to a connected socket (paho's callback hands us one)."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        setsockopt(*NO_DELAY)


class BufferedSocket:
    """A non-blocking socket with a read buffer and a write buffer, for paho.

    paho reads each packet with three `recv` calls (type byte, length byte,
    body) and sends each PUBACK with its own `send`: four system calls per
    message, and with TCP_NODELAY one TCP segment per acknowledgement. Here
    one `recv` fetches many packets and paho's small reads are served from
    memory; `send` only appends, and the owner calls `flush()` once it has
    let paho write everything it had (one segment for a whole batch of
    acknowledgements). `pending()` is how paho, and the gateway's reader,
    learn that bytes are waiting in memory, as with a TLS socket.

    Every byte paho "sent" is in the kernel or in `_out`; `close()` flushes
    what it can first. Bytes still unsent when a connection breaks are lost
    with it, exactly as those in the kernel's buffer would be: the broker
    re-sends every message whose PUBACK it did not get.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._in = b""
        self._pos = 0
        self._out = bytearray()
        #: Back-pressure: read nothing more (paho sees "no data yet").
        self.hold = False

    def recv(self, n: int) -> bytes:
        if self.hold:
            raise BlockingIOError("reading paused")
        avail = len(self._in) - self._pos
        if avail <= 0:
            data: bytes = self._sock.recv(max(n, READ_SIZE))  # BlockingIOError when empty
            if len(data) <= n:
                return data
            self._in, self._pos = data, n
            return data[:n]
        pos = self._pos
        if n >= avail:  # a short read, as a socket may give; paho asks again
            out = self._in[pos:] if pos else self._in
            self._in, self._pos = b"", 0
            return out
        self._pos = pos + n
        return self._in[pos:pos + n]

    def pending(self) -> int:
        """Bytes already read from the kernel (here, or inside TLS)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._in) - self._pos + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._out += data
        if len(self._out) >= FLUSH_AT:
            self.flush()
        return len(data)

    @property
    def unsent(self) -> int:
        return len(self._out)

    def flush(self) -> bool:
        """Write what the kernel takes now; True when nothing is left."""
        out = self._out
        try:
            while out:
                sent = self._sock.send(out)
                del out[:sent]
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        except OSError:
            # A broken connection: paho's next read reports it and reconnects.
            out.clear()
        return True

    def close(self) -> None:
        self.flush()  # e.g. the DISCONNECT paho has just written
        self._sock.close()

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def __getattr__(self, name: str) -> Any:
        # setblocking, setsockopt, getpeername, ...: the socket's own.
        return getattr(self._sock, name)
