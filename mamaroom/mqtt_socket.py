"""Socket options every mamaroom MQTT connection uses."""

from __future__ import annotations

import socket

#: No Nagle: an MQTT exchange is small packets back to back (PUBACK, then a
#: PUBLISH); with Nagle the second waits for the peer's delayed ACK (~40 ms).
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def no_delay(sock: object) -> None:
    """Apply TCP_NODELAY to a connected socket (paho's callback hands us one)."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        setsockopt(*NO_DELAY)
