"""An embedded MQTT broker (amqtt) for `mamaroom demo` on machines with none.

Production uses Mosquitto (see docs); this only lets the demo run anywhere.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


def broker_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker  # imported late: heavy, and only the demo needs it

        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        })
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await asyncio.wait_for(self._broker.shutdown(), timeout=10)
