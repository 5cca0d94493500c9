"""One candidate broker in its own process, for bench/embedded_broker.py.

    <venv>/bin/python bench/_broker_runner.py KIND PORT

Run by path with the candidate's own venv (each candidate has its own
dependencies, e.g. two amqtt versions), so it imports nothing of mamaroom's
except for KIND `mamaroom`, which the project's venv runs. It listens on
127.0.0.1:PORT, prints `listening` once it does, and stops on SIGINT or
SIGTERM as the demo would stop it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any


async def serve(kind: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker: Any
    if kind == "amqtt":
        from amqtt.broker import Broker

        # The configuration cli/embedded_broker.py used with amqtt.
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
            if _amqtt_new_config()
            else {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
                "topic-check": {"enabled": False},
            }
        )
        await broker.start()
        print("listening", flush=True)
        await stop.wait()
        await asyncio.wait_for(broker.shutdown(), timeout=10)
    elif kind == "moat-mqtt":
        from moat.mqtt.broker import create_broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        async with create_broker(config):
            print("listening", flush=True)
            await stop.wait()
    elif kind in ("iotcore", "iotcore-tuned"):
        from iotcore import Broker as IotBroker

        # rumqttd has no shutdown API: iotcore runs it in a child process.
        # Tuned: Mosquitto's shipped message size and in-flight window
        # (deploy/mosquitto/mamaroom.conf) instead of rumqttd's 20 KB and 100.
        tuned = (
            {"max_payload_size": 2 * 1024 * 1024, "max_inflight_count": 1000}
            if kind == "iotcore-tuned"
            else {}
        )
        broker = IotBroker(port=port, listen="127.0.0.1", **tuned)
        await asyncio.to_thread(broker.start)
        print("listening", flush=True)
        await stop.wait()
        await asyncio.to_thread(broker.stop)
    elif kind == "mamaroom":
        from cli.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker("127.0.0.1", port)
        await broker.start()
        print("listening", flush=True)
        await stop.wait()
        await broker.stop()
    else:
        raise SystemExit(f"unknown broker kind {kind!r}")


def _amqtt_new_config() -> bool:
    """amqtt 0.11 took plugins by class path; 0.10 by entry-point name."""
    from importlib.metadata import version

    major, minor = (int(x) for x in version("amqtt").split(".")[:2])
    return (major, minor) >= (0, 11)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
    print("exited", flush=True)
