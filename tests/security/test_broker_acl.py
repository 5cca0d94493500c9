"""The shipped broker config and ACL, against a real Mosquitto: who may
connect where, publish what, read what.

With MQTT 3.1.1, Mosquitto 2 silently drops a publish the ACL refuses (the
PUBACK still says success), so a refusal is proved by a subscriber with full
read rights (the gateway account) not receiving it, while a marker message
published after it by the same client does arrive: the broker keeps one
publisher's messages in order, so the marker's arrival means the refused one
had its chance. With MQTT 5 the PUBACK carries the refusal (0x87).
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.security.broker import Client, ProductionBroker
from tests.support import wait_for

KINDS = ("status", "occupancy", "call", "telemetry")


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionBroker]:
    broker = ProductionBroker(tmp_path_factory.mktemp("prod-mosquitto"))
    for device in ("dev-a", "dev-b"):
        broker.add_device(device)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def connected(
    made: list[Client],
    prod: ProductionBroker,
    user: str,
    *,
    client_id: str | None = None,
    protocol: MQTTProtocolVersion = paho.MQTTv311,
    clean: bool = True,
) -> Client:
    service = user.startswith("mamaroom.")  # services: the local listener, no TLS
    c = Client(
        prod,
        user,
        port=prod.local_port if service else None,
        tls=not service,
        client_id=client_id,
        protocol=protocol,
        clean=clean,
    )
    made.append(c)
    rc = c.connect()
    assert not rc.is_failure, f"{user}: {rc}\n{prod.log_tail()}"
    return c


def test_anonymous_and_wrong_passwords_are_refused_on_every_listener(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    listeners = [(prod.local_port, False), (prod.device_port, True), (prod.service_tls_port, True)]
    for port, tls in listeners:
        anonymous = Client(prod, None, port=port, tls=tls)
        clients.append(anonymous)
        assert anonymous.connect().is_failure, f"anonymous accepted on {port}"
        wrong = Client(prod, "mamaroom.server", "not-the-password", port=port, tls=tls)
        clients.append(wrong)
        assert wrong.connect().is_failure, f"a wrong password accepted on {port}"
    # Devices log in on the devices' listener only; services never on it.
    for port, tls in ((prod.local_port, False), (prod.service_tls_port, True)):
        device = Client(prod, "dev-a", port=port, tls=tls)
        clients.append(device)
        assert device.connect().is_failure, f"a device accepted on the services' port {port}"
    service = Client(prod, "mamaroom.gateway", port=prod.device_port)
    clients.append(service)
    assert service.connect().is_failure, "a service accepted on the devices' listener"


def test_the_device_listener_speaks_only_tls_and_checks_nothing_less(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    plain = Client(prod, "dev-a", port=prod.device_port, tls=False)
    clients.append(plain)
    with pytest.raises((OSError, AssertionError)):
        assert plain.connect().is_failure
    # A client that does not trust the site CA does not get through either.
    with (
        socket.create_connection(("127.0.0.1", prod.device_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_device_cannot_publish_as_another_and_can_as_itself(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    watcher = connected(clients, prod, "mamaroom.gateway")
    watcher.subscribe("mr/v1/dev/#")
    a = connected(clients, prod, "dev-a")
    for kind in (*KINDS, "cmd"):
        a.publish(f"mr/v1/dev/dev-b/{kind}", b"forged by dev-a")
    a.publish("mr/v1/dev/dev-a/cmd", b'{"cmd":"call_ack"}')  # not even its own commands
    a.publish("mr/v1/registry", b"{}")
    a.publish("mr/v1/room/T1-0201/state", b"{}")
    for kind in KINDS:
        a.publish(f"mr/v1/dev/dev-a/{kind}", f"own {kind}".encode())
    wait_for(lambda: watcher.received("mr/v1/dev/dev-a/telemetry"), what="dev-a's own telemetry")
    got = {m.topic: bytes(m.payload) for m in watcher.messages}
    assert got == {f"mr/v1/dev/dev-a/{kind}": f"own {kind}".encode() for kind in KINDS}


def test_with_mqtt5_the_refusal_comes_back_as_not_authorized(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    a = connected(clients, prod, "dev-a", protocol=paho.MQTTv5)
    refused = a.publish("mr/v1/dev/dev-b/call", b"forged")
    assert refused.value == 0x87, refused  # Not authorized
    accepted = a.publish("mr/v1/dev/dev-a/call", b"own")
    assert not accepted.is_failure, accepted  # success, or "no matching subscribers"


def test_a_device_reads_its_own_commands_and_no_one_elses(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    a = connected(clients, prod, "dev-a")
    b = connected(clients, prod, "dev-b")
    # Mosquitto 2.0 grants a subscription to another's topics (with 3.1.1) and
    # then delivers nothing the ACL refuses: asking for dev-b's commands, all
    # commands or everything still yields dev-a's own commands only.
    for topic in ("mr/v1/dev/dev-b/cmd", "mr/v1/dev/+/cmd", "#", "mr/v1/dev/dev-a/cmd"):
        a.subscribe(topic)
    b.subscribe("mr/v1/dev/dev-b/cmd")
    server = connected(clients, prod, "mamaroom.server")
    server.publish("mr/v1/dev/dev-b/cmd", b'{"for":"b"}')
    b.publish("mr/v1/dev/dev-b/call", b"b's call")  # nor what other devices publish
    server.publish("mr/v1/dev/dev-a/cmd", b'{"for":"a"}')
    wait_for(lambda: a.received("mr/v1/dev/dev-a/cmd"), what="dev-a's own command")
    wait_for(lambda: b.received("mr/v1/dev/dev-b/cmd"), what="dev-b's own command")
    assert {m.topic for m in a.messages} == {"mr/v1/dev/dev-a/cmd"}


def test_a_device_cannot_take_over_another_devices_session(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    b = connected(clients, prod, "dev-b")
    watcher = connected(clients, prod, "mamaroom.gateway")
    watcher.subscribe("mr/v1/dev/dev-b/telemetry")
    connected(clients, prod, "dev-a", client_id="dev-b")  # dev-a's login, dev-b's client id
    b.publish("mr/v1/dev/dev-b/telemetry", b"still here")
    wait_for(lambda: watcher.received("mr/v1/dev/dev-b/telemetry"), what="dev-b still connected")
    assert b.disconnects == 0


def test_each_service_can_do_what_it_needs_and_no_more(
    prod: ProductionBroker, clients: list[Client]
) -> None:
    gateway = connected(clients, prod, "mamaroom.gateway")
    server = connected(clients, prod, "mamaroom.server")
    watchdog = connected(clients, prod, "mamaroom.watchdog")
    device = connected(clients, prod, "dev-a")
    device.subscribe("mr/v1/dev/dev-a/cmd")
    gateway.subscribe("mr/v1/dev/#")
    gateway.subscribe("mr/v1/registry")
    for topic in (
        "mr/v1/room/+/state",
        "mr/v1/gateway/+/+",
        "mr/v1/dev/+/call",
        "mr/v1/dev/+/status",
        "mr/v1/dev/+/occupancy",
    ):
        assert not server.subscribe(topic)[0].is_failure, topic
    watchdog.subscribe("mr/v1/gateway/#")
    watchdog.subscribe("mr/v1/watchdog/#")
    watchdog.subscribe("mr/v1/dev/#")  # granted, and yet it sees no device traffic
    registry = json.dumps({"v": 1, "version": 1}).encode()
    server.publish("mr/v1/registry", registry)
    server.publish("mr/v1/dev/dev-a/cmd", b'{"cmd":"call_ack"}')
    device.publish("mr/v1/dev/dev-a/call", b'{"press":1}')
    gateway.publish("mr/v1/room/T1-0101/state", b'{"state":"free"}')
    gateway.publish("mr/v1/gateway/mamaroom-gateway/stats", b'{"received":1}')
    watchdog.publish("mr/v1/watchdog/w1/ping", b"1")
    wait_for(lambda: gateway.received("mr/v1/registry") == [registry], what="registry at gateway")
    wait_for(lambda: device.received("mr/v1/dev/dev-a/cmd"), what="cmd at the device")
    wait_for(lambda: server.received("mr/v1/dev/dev-a/call"), what="call at the server")
    wait_for(lambda: server.received("mr/v1/room/T1-0101/state"), what="room state at server")
    wait_for(lambda: server.received("mr/v1/gateway/mamaroom-gateway/stats"), what="stats")
    wait_for(lambda: watchdog.received("mr/v1/gateway/mamaroom-gateway/stats"), what="stats")
    wait_for(lambda: watchdog.received("mr/v1/watchdog/w1/ping"), what="watchdog round trip")
    assert not any(m.topic.startswith("mr/v1/dev/") for m in watchdog.messages)
    # And no more: the gateway may not command devices or change the registry;
    # the server and the watchdog may not forge device messages or room states.
    gateway.publish("mr/v1/dev/dev-a/cmd", b"from gateway")
    gateway.publish("mr/v1/registry", b"from gateway")
    server.publish("mr/v1/dev/dev-a/call", b"from server")
    server.publish("mr/v1/room/T1-0101/state", b"from server")
    watchdog.publish("mr/v1/dev/dev-a/call", b"from watchdog")
    watchdog.publish("mr/v1/gateway/mamaroom-gateway/stats", b"from watchdog")
    device.publish("mr/v1/dev/dev-a/call", b"marker")  # in order after its own first call
    wait_for(
        lambda: server.received("mr/v1/dev/dev-a/call")[-1:] == [b"marker"], what="the marker call"
    )
    server.publish("mr/v1/dev/dev-a/cmd", b"marker")
    wait_for(lambda: device.received("mr/v1/dev/dev-a/cmd")[-1:] == [b"marker"], what="marker")
    gateway.publish("mr/v1/gateway/mamaroom-gateway/stats", b"marker")
    wait_for(
        lambda: server.received("mr/v1/gateway/mamaroom-gateway/stats")[-1:] == [b"marker"],
        what="marker stats",
    )
    server.publish("mr/v1/registry", b"marker")
    wait_for(lambda: gateway.received("mr/v1/registry")[-1:] == [b"marker"], what="marker")
    assert device.received("mr/v1/dev/dev-a/cmd") == [b'{"cmd":"call_ack"}', b"marker"]
    assert gateway.received("mr/v1/registry") == [registry, b"marker"]
    assert server.received("mr/v1/dev/dev-a/call") == [b'{"press":1}', b"marker"]
    assert server.received("mr/v1/room/T1-0101/state") == [b'{"state":"free"}']
    assert server.received("mr/v1/gateway/mamaroom-gateway/stats") == [b'{"received":1}', b"marker"]


def test_a_queued_call_survives_a_broker_restart(tmp_path: Path) -> None:
    """The gateway is away; a node's call waits in the gateway's persistent
    session; the broker restarts; the gateway comes back and gets the call."""
    broker = ProductionBroker(tmp_path)
    broker.add_device("dev-a")
    broker.start()
    made: list[Client] = []
    try:
        gateway = connected(
            made, broker, "mamaroom.gateway", client_id="mamaroom-gateway", clean=False
        )
        gateway.subscribe("mr/v1/dev/#")
        gateway.close()
        device = connected(made, broker, "dev-a")
        device.publish("mr/v1/dev/dev-a/call", b'{"action":"press","call_id":"c-1"}')
        device.close()
        broker.restart()
        back = connected(
            made, broker, "mamaroom.gateway", client_id="mamaroom-gateway", clean=False
        )
        wait_for(
            lambda: back.received("mr/v1/dev/dev-a/call"),
            what="the queued call",
            detail=broker.log_tail,
        )
        assert back.received("mr/v1/dev/dev-a/call") == [b'{"action":"press","call_id":"c-1"}']
    finally:
        for c in made:
            c.close()
        broker.stop()
