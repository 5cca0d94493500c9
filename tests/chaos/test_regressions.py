"""Defects the chaos run found, each pinned by a quick test (part of `make test`)."""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.contract import room_state_topic
from tests.support import DeviceFactory, Services, wait_for


def retained_state(port: int, room: str) -> dict[str, Any] | None:
    got: list[dict[str, Any]] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    c.on_connect = lambda c, *_: c.subscribe(room_state_topic(room), qos=1)
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload)) if m.payload else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        wait_for(lambda: got, timeout=10, what=f"retained state of {room}")
    finally:
        c.disconnect()
        c.loop_stop()
    return got[-1]


def test_a_restarted_gateway_corrects_stale_retained_room_states(
    services: Services, device_factory: DeviceFactory
) -> None:
    # A broker restored from an autosave up to a minute old hands out old
    # retained room states; a gateway starting then must re-assert its own.
    dev = device_factory("dev-a")
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    services.gateway.stop()
    stale = {
        "v": 1,
        "room": "T1-0101",
        "state": "occupied",
        "since": None,
        "device": "dev-a",
        "reason": None,
    }
    dev.publish_raw(room_state_topic("T1-0101"), json.dumps(stale).encode(), retain=True)
    assert (retained_state(services.broker.port, "T1-0101") or {}).get("state") == "occupied"
    services.gateway = services.new_gateway("gateway-2")
    services.start_gateway()
    wait_for(
        lambda: (retained_state(services.broker.port, "T1-0101") or {}).get("state") == "free",
        timeout=30,
        what="the gateway re-asserting the room's state",
        detail=services.logs,
    )
