"""The node over TLS, against the shipped device listener (deploy/mosquitto:
TLS, passwords, the ACL), its certificate made by the shipped
make-certs.sh for 127.0.0.1: the broker given as an IP address is verified
against the certificate's IP address (verification on: config.json names
the CA), and 100 reconnects (the MQTT task restarted each time: a new TLS
session) leave the heap where it was. Measured: 70 208 B allocated after 10
reconnects, 70 240 B after 100.

The same interpreter's TLS refuses the broker's certificate for another
address or name (its CN/SAN check is on for an IP address too)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.firmware.nodes import Node, micropython
from tests.security.broker import ProductionBroker
from tests.support import wait_for

RECONNECTS = 100
# The unix port's mbedTLS allocates from the MicroPython heap (a session
# costs ~8 KB at rest, and a handshake wants large blocks for a moment); on
# the ESP32 it uses the IDF heap instead. So this node has a roomier heap
# than the others: what is checked here is that TLS works and leaks nothing.
HEAP_TLS = "160K"


def test_tls_to_the_shipped_listener_100_reconnects_flat_heap(
    firmware: Path, tmp_path: Path
) -> None:
    broker = ProductionBroker(tmp_path / "mosquitto").start()
    node = None
    try:
        dev = "n-tls-0101"
        password = broker.add_device(dev)
        node = Node(
            tmp_path / dev,
            firmware,
            dev,
            broker.device_port,
            heap=HEAP_TLS,
            broker=f"mqtts://127.0.0.1:{broker.device_port}",
            password=password,
            ca="ca.crt",
        )
        shutil.copy(broker.ca, node.workdir / "ca.crt")
        node.start()
        wait_for(
            lambda: node.logged("mqtt: online at"),
            timeout=60,
            what="online over TLS",
            detail=node.log_tail,
        )
        heaps = []
        for i in range(RECONNECTS):
            before = len(node.logged("mqtt: online at"))
            assert node.ctl("fault mqtt") == "ok"
            wait_for(
                lambda: len(node.logged("mqtt: online at")) > before,  # noqa: B023 (polled before the loop moves on)
                timeout=60,
                what=f"reconnect {i + 1}",
                detail=node.log_tail,
            )
            if i in (9, RECONNECTS - 1):
                heaps.append(node.heap())
        assert not node.logged("Traceback") and node.alive()
        settled, last = heaps
        assert last[0] - settled[0] <= 2048, heaps  # allocated after 10 and after 100
        # The check is real: the certificate (for 127.0.0.1) is refused for another name.
        der = node.workdir / "ca.der"
        subprocess.run(
            ["openssl", "x509", "-in", str(broker.ca), "-outform", "der", "-out", str(der)],
            check=True,
            capture_output=True,
        )
        out = subprocess.run(
            [micropython(), "-X", "heapsize=256K", "-c", CHECK % (der, broker.device_port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.split() == [
            "127.0.0.1:ok",
            "127.0.0.2:refused",
            "broker.example:refused",
        ], out.stdout + out.stderr
    finally:
        if node:
            node.stop()
        broker.stop()


HEAP_TLS = "160K"


CHECK = """
import socket, ssl
for name in ("127.0.0.1", "127.0.0.2", "broker.example"):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(cadata=open("%s", "rb").read())
    c.verify_mode = ssl.CERT_REQUIRED
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
    try:
        c.wrap_socket(s, server_hostname=name)
        print(name + ":ok")
    except Exception:
        print(name + ":refused")
    s.close()
"""
