"""Socket options every mamaroom MQTT connection uses, and the gateway's
buffered socket for paho."""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

#: No Nagle: an MQTT exchange is small packets back to back (PUBACK, then a
#: PUBLISH); with Nagle the second waits for the peer's delayed ACK (~40 ms).
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

#: Bytes read from the kernel at once: a few hundred device messages.
READ_SIZE = 65_536
#: Buffered output beyond this is sent at once rather than at the next flush.
FLUSH_AT = 65_536

#: An MQTT 3.1.1 PUBACK: type 4, remaining length 2, the packet id.
PUBACK = struct.Struct("!BBH")

#: (fixed-header byte, start of the body, end of the frame) in `BufferedSocket.buffer`.
Frame = tuple[int, int, int]


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

    The owner may also take whole MQTT frames from the buffer itself
    (`fill`, `next_frame`, `consume`) and hand paho only the others, one
    frame at a time (`limit`): the gateway parses its device PUBLISHes here,
    as paho's Python per packet was a quarter of a message's cost.

    Every byte paho "sent" is in the kernel or in `_out`; `close()` flushes
    what it can first. Bytes still unsent when a connection breaks are lost
    with it, exactly as those in the kernel's buffer would be: the broker
    re-sends every message whose PUBACK it did not get.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        #: Bytes read from the kernel; those before `pos` are used up.
        self.buffer = b""
        self.pos = 0
        #: While >= 0, paho may read only up to here (the end of one frame).
        self.limit = -1
        self._eof = False
        self._error: OSError | None = None
        self._out = bytearray()

    # --- reading: the owner's frames -------------------------------------------

    def fill(self) -> bool:
        """One `recv` from the kernel, kept after what is unread. False when
        nothing came (no data yet, or the end was already seen)."""
        if self._eof or self._error is not None:
            return False
        try:
            data: bytes = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError as exc:  # reset, ...: paho's next read reports it
            self._error = exc
            return True
        if not data:
            self._eof = True
            return True
        pos, buffer = self.pos, self.buffer
        self.buffer = buffer[pos:] + data if pos < len(buffer) else data
        self.pos = 0
        return True

    def next_frame(self) -> Frame | None:
        """The complete MQTT frame at the front of the buffer, or None."""
        buf, pos = self.buffer, self.pos
        n = len(buf)
        i = pos + 1
        length = shift = 0
        while True:
            if i >= n:
                return None
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 21:  # not MQTT: paho reads it, refuses it and disconnects
                return buf[pos], i, n
        end = i + length
        return (buf[pos], i, end) if end <= n else None

    def consume(self, end: int) -> None:
        self.pos = end

    @property
    def ended(self) -> bool:
        """The peer closed or the connection broke, and all before it is read."""
        return (self._eof or self._error is not None) and self.pos >= len(self.buffer)

    # --- reading: paho's --------------------------------------------------------

    def recv(self, n: int) -> bytes:
        if self.limit < 0 and self.pos >= len(self.buffer):
            self.fill()  # paho reading on its own: from the kernel, through the buffer
        pos = self.pos
        stop = self.limit if self.limit >= 0 else len(self.buffer)
        if pos >= stop:
            if self.limit < 0:
                if self._error is not None:
                    error, self._error = self._error, None
                    self._eof = True
                    raise error
                if self._eof:
                    return b""  # closed by the peer: paho disconnects
            raise BlockingIOError("no data yet")
        take = min(n, stop - pos)  # a short read, as a socket may give; paho asks again
        self.pos = pos + take
        return self.buffer[pos : pos + take]

    def pending(self) -> int:
        """Bytes already read from the kernel (here, or inside TLS)."""
        return len(self.buffer) - self.pos + self.inner_pending()

    def inner_pending(self) -> int:
        """Bytes decrypted inside TLS, which raise no readiness event."""
        inner = getattr(self._sock, "pending", None)
        return int(inner()) if inner is not None else 0

    # --- writing ----------------------------------------------------------------

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
