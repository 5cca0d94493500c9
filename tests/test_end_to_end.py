"""Device → Mosquitto → gateway → retained room state → server → HTTP/SSE,
all real processes on a private broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from mamaroom.contract import Kind, device_topic
from mamaroom.storage.embedded import EmbeddedStore
from tests.support import Device, DeviceFactory, Mosquitto, Services, sse_events, wait_for

T = TypeVar("T")


def test_door_lock_reaches_the_room_list(services: Services, device_factory: DeviceFactory) -> None:
    assert services.room("T1-0101")["state"] == "offline"  # nothing heard yet: never "free"
    dev = device_factory("dev-a")
    dev.occupancy(True)
    room = services.wait_room_state("T1-0101", "occupied")
    assert room["device"] == "dev-a" and room["name"] == "测试楼1层母婴室"
    assert room["since"] is not None
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    listed = {r["id"]: r for r in services.http.get("/api/rooms").json()}
    assert listed["T1-0101"]["state"] == "free" and listed["T1-0101"]["available"] is True
    assert listed["T1-0201"]["state"] == "offline"
    free = services.http.get("/api/rooms", params={"state": "free"}).json()
    assert [r["id"] for r in free] == ["T1-0101"]
    assert [r["id"] for r in services.http.get("/api/rooms", params={"floor": 2}).json()] == [
        "T1-0201"
    ]
    # Every event was stored once, in order.
    stored = services.http.get("/metrics").text
    assert 'mamaroom_rooms{state="free"} 1.0' in stored


def test_the_room_list_follows_every_change(
    services: Services, device_factory: DeviceFactory
) -> None:
    """GET /api/rooms is served from an encoding kept until a room changes:
    it must never lag a change, and must be the bytes FastAPI encodes."""

    def listed(**params: Any) -> dict[str, Any]:
        return {r["id"]: r for r in services.http.get("/api/rooms", params=params).json()}

    assert listed()["T1-0101"]["state"] == "offline" and listed(state="free") == {}
    dev = device_factory("dev-a")
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    assert listed()["T1-0101"]["state"] == "free" and list(listed(state="free")) == ["T1-0101"]
    assert (
        services.admin("PATCH", "/api/admin/rooms/T1-0101", json={"in_service": False}).status_code
        == 200
    )
    wait_for(lambda: services.room("T1-0101")["in_service"] is False, what="out of service")
    assert (
        listed()["T1-0101"]["available"] is False
        and listed(floor=1)["T1-0101"]["in_service"] is False
    )
    # The same bytes as FastAPI's own encoding of each room (GET /api/rooms/{id}).
    body = services.http.get("/api/rooms").content
    assert (
        body
        == b"["
        + b",".join(services.http.get(f"/api/rooms/{room}").content for room in listed())
        + b"]"
    )


def test_mosquitto_pub_door_event_shows_in_api_and_stream(
    services: Services, device_factory: DeviceFactory
) -> None:
    """The issue's acceptance check, with the real `mosquitto_pub` client."""
    dev = device_factory("dev-b")
    dev.occupancy(False)
    services.wait_room_state("T1-0201", "free")

    events: list[dict[str, Any]] = []
    got_snapshot = threading.Event()

    def listen() -> None:
        for event, data in sse_events(f"{services.base_url}/api/stream"):
            if event == "snapshot":
                got_snapshot.set()
            elif event == "room":
                events.append(data)
                if data["id"] == "T1-0201" and data["state"] == "occupied":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert got_snapshot.wait(15), "no snapshot on /api/stream"
    payload = json.dumps(
        {"v": 1, "boot": 1, "seq": 100, "ts": None, "occupied": True, "source": "door"}
    )
    subprocess.run(
        [
            "mosquitto_pub",
            "-p",
            str(services.broker.port),
            "-q",
            "1",
            "-t",
            device_topic("dev-b", Kind.OCCUPANCY),
            "-m",
            payload,
        ],
        check=True,
    )
    listener.join(30)
    assert any(e["id"] == "T1-0201" and e["state"] == "occupied" for e in events), events
    assert services.room("T1-0201")["state"] == "occupied"


def test_bad_input_is_counted_and_the_next_valid_message_works(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev = device_factory("dev-a")
    occ = device_topic("dev-a", Kind.OCCUPANCY)
    junk = [
        (occ, b"not json at all", "not_json"),
        (occ, b"\xff\xfe\x00garbage", "not_json"),
        (
            occ,
            json.dumps(
                {"v": 1, "boot": 1, "seq": 1, "ts": None, "occupied": "yes", "source": "door"}
            ).encode(),
            "invalid_payload",
        ),
        (occ, json.dumps({"v": 1, "boot": 1, "seq": 1, "ts": None}).encode(), "invalid_payload"),
        (occ, b"[1, 2, 3]", "invalid_payload"),
        (occ, b'{"pad": "' + b"x" * 5000 + b'"}', "oversize"),
        (
            device_topic("ghost-node", Kind.OCCUPANCY),
            json.dumps(
                {"v": 1, "boot": 1, "seq": 1, "ts": None, "occupied": True, "source": "door"}
            ).encode(),
            "unknown_device",
        ),
        ("mr/v1/dev/dev-a/bogus", b"{}", "bad_topic"),
        ("mr/v1/dev/Bad Id/occupancy", b"{}", "bad_topic"),
        ("mr/v1/dev/dev-a/occupancy/extra", b"{}", "bad_topic"),
        (device_topic("dev-a", Kind.STATUS), b"maybe", "invalid_payload"),
    ]
    for topic, payload, _ in junk:
        dev.publish_raw(topic, payload)
    expected: dict[str, int] = {}
    for _, _, reason in junk:
        expected[reason] = expected.get(reason, 0) + 1

    def counted() -> bool:
        m = services.metrics()
        return all(
            m.get(f'mamaroom_gateway_rejected_total{{reason="{r}"}}') == n
            for r, n in expected.items()
        )

    wait_for(counted, what=f"rejects counted {expected}", detail=lambda: str(services.metrics()))
    assert services.gateway.alive()
    dev.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")
    assert services.gateway.log().count("message rejected") == len(junk)
    assert services.metrics()['mamaroom_gateway_stored_total{kind="occupancy"}'] == 1
    # The server's /metrics summarises each gateway from its retained stats.
    summary = 'mamaroom_gateway_rejected{gateway="mamaroom-gateway",reason="not_json"} 2.0'
    wait_for(
        lambda: summary in services.http.get("/metrics").text,
        timeout=30,
        what="gateway summary in the server's /metrics",
    )
    assert (
        'mamaroom_gateway_up{gateway="mamaroom-gateway"} 1.0' in services.http.get("/metrics").text
    )
    services.gateway.stop()
    [event] = stored_occupancy(services.workdir / "data")
    assert (event["device"], event["room"], event["occupied"]) == ("dev-a", "T1-0101", 1)
    # The unknown node is remembered as a candidate to adopt.
    [ghost] = read_store(services.workdir / "data", lambda s: s.devices.unknown_devices())
    assert ghost["device"] == "ghost-node" and ghost["messages"] == 1
    health = services.admin("GET", "/api/devices").json()
    assert [u["device"] for u in health["unknown"]] == ["ghost-node"]
    [dev_a] = [d for d in health["devices"] if d["device"] == "dev-a"]
    assert dev_a["room"] == "T1-0101" and dev_a["last_seen"] is not None


def test_a_replayed_message_is_ignored(services: Services, device_factory: DeviceFactory) -> None:
    dev = device_factory("dev-a")
    first = dev.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")
    # The same (device, boot, seq) again, e.g. a redelivery: not stored, no state change.
    dev.publish(Kind.OCCUPANCY, first)
    wait_for(
        lambda: services.metrics()["mamaroom_gateway_duplicates_total"] == 1,
        what="duplicate counted",
    )
    assert services.metrics()['mamaroom_gateway_stored_total{kind="occupancy"}'] == 2
    assert services.room("T1-0101")["state"] == "free"
    # A new boot starts seq again from 1, and that is new.
    dev.boot, dev.seq = 2, 0
    dev.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")


def test_device_dropped_without_disconnect_goes_offline_by_last_will(services: Services) -> None:
    from tests.support import Proc

    sim = Proc(
        "simulate", ["simulate", "--rooms", "1", "--seed", "1"], services.env, services.workdir
    ).start()
    try:
        room = wait_for(
            lambda: (r := services.room("T1-0101"))["state"] != "offline" and r,
            what="simulated room online",
            detail=lambda: sim.log_tail(),
        )
        assert room["state"] in ("free", "occupied")
    finally:
        sim.kill()  # SIGKILL: no DISCONNECT, the broker publishes the last will
    room = services.wait_room_state("T1-0101", "offline")
    state = wait_for(lambda: _retained_state(services, "T1-0101"), what="retained state")
    assert state["reason"] == "device_offline"


def stored_occupancy(data_dir: Path) -> list[dict[str, Any]]:
    return read_store(data_dir, lambda s: s.series.occupancy_events())


def read_store(data_dir: Path, query: Callable[[EmbeddedStore], Awaitable[T]]) -> T:
    """Run one query on a test's embedded store (after its gateway stopped)."""

    async def read() -> T:
        store = EmbeddedStore(data_dir / "store.sqlite")
        await store.open()
        try:
            return await query(store)
        finally:
            await store.close()

    return asyncio.run(read())


def _retained_state(services: Services, room: str) -> dict[str, Any] | None:
    out = subprocess.run(
        [
            "mosquitto_sub",
            "-p",
            str(services.broker.port),
            "-t",
            f"mr/v1/room/{room}/state",
            "-C",
            "1",
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(out.stdout) if out.stdout.strip() else None


def test_restarted_server_rebuilds_state_from_retained_messages(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev = device_factory("dev-a")
    dev.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")
    before = services.room("T1-0101")
    services.server.stop()
    services.start_server()
    after = services.wait_room_state("T1-0101", "occupied")
    assert after["since"] == before["since"]


def test_moving_a_device_takes_effect_in_the_running_gateway(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev = device_factory("dev-a")
    dev.occupancy(True)
    services.wait_room_state("T1-0101", "occupied")
    # Move dev-a from T1-0101 to T1-0301 (which had no device).
    r = services.admin("PATCH", "/api/admin/rooms/T1-0101", json={"device": None})
    assert r.status_code == 200, r.text
    r = services.admin("PATCH", "/api/admin/rooms/T1-0301", json={"device": "dev-a"})
    assert r.status_code == 200, r.text
    services.wait_room_state("T1-0101", "offline")
    services.wait_room_state("T1-0301", "occupied")
    dev.occupancy(False)
    services.wait_room_state("T1-0301", "free")
    assert services.room("T1-0101")["state"] == "offline"
    # A device can be in one room only.
    r = services.admin("PATCH", "/api/admin/rooms/T1-0201", json={"device": "dev-a"})
    assert r.status_code == 409 and "T1-0301" in r.json()["detail"]
    assert services.http.patch("/api/admin/rooms/T1-0201", json={"device": None}).status_code == 401


def test_silent_device_goes_offline_after_the_supervision_window(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, device_factory: DeviceFactory
) -> None:
    svc = Services(broker, tmp_path, rooms_csv, MAMAROOM_GATEWAY__SUPERVISION_S="2").start()
    try:
        dev = device_factory("dev-a")
        dev.occupancy(False)
        svc.wait_room_state("T1-0101", "free")
        # The node stays connected (no last will) but says nothing: stale is never free.
        svc.wait_room_state("T1-0101", "offline", timeout=30)
        assert (_retained_state(svc, "T1-0101") or {}).get("reason") == "silent"
        dev.telemetry()  # any message is a sign of life
        svc.wait_room_state("T1-0101", "free")
    finally:
        svc.stop()


def test_unknown_room_is_a_json_404_and_bad_filters_are_422(services: Services) -> None:
    r = services.http.get("/api/rooms/NOPE")
    assert r.status_code == 404 and r.json() == {"detail": "no room 'NOPE'"}
    r = services.http.get("/api/rooms", params={"state": "exploded"})
    assert r.status_code == 422 and "detail" in r.json()
    r = services.http.get("/api/rooms", params={"floor": "x"})
    assert r.status_code == 422
    assert services.http.get("/healthz").json() == {"status": "ok"}
    assert "paths" in services.http.get("/openapi.json").json()


def test_gateway_and_broker_restarts_lose_no_valid_message(tmp_path: Path, rooms_csv: Path) -> None:
    # Persistence on, as in production: sessions and queues survive the restart.
    broker = Mosquitto(tmp_path / "persistent-broker", persistence=True).start()
    svc = Services(broker, tmp_path, rooms_csv).start()
    devices: list[Device] = []
    try:
        dev = Device(broker.port, "dev-a")
        devices.append(dev)
        dev.occupancy(True)
        svc.wait_room_state("T1-0101", "occupied")
        # Gateway down: messages wait at the broker in its persistent session.
        svc.gateway.stop()
        for i in range(20):
            dev.occupancy(i % 2 == 1)  # ends with occupied=True... then one more
        dev.occupancy(False)
        svc.gateway = type(svc.gateway)("gateway2", ["gateway"], svc.env, svc.workdir)
        svc.start_gateway()
        svc.wait_room_state("T1-0101", "free")
        wait_for(
            lambda: svc.metrics().get('mamaroom_gateway_stored_total{kind="occupancy"}') == 21,
            what="all 21 queued messages stored",
            detail=svc.logs,
        )
        # Broker restart: everyone reconnects and carries on.
        broker.restart()
        dev2 = Device(broker.port, "dev-b")
        devices.append(dev2)
        dev2.occupancy(True)
        dev.occupancy(True)
        svc.wait_room_state("T1-0201", "occupied", timeout=60)
        svc.wait_room_state("T1-0101", "occupied", timeout=60)
        wait_for(lambda: svc.http.get("/readyz").status_code == 200, what="ready again")
        assert svc.metrics()['mamaroom_gateway_stored_total{kind="occupancy"}'] == 23
    finally:
        for d in devices:
            d.close()
        svc.stop()
        broker.stop()
    # Every message stored exactly once, whatever was redelivered.
    events = stored_occupancy(tmp_path / "data")
    assert sorted((e["device"], e["seq"]) for e in events) == sorted(
        [("dev-a", seq) for seq in range(1, 24)] + [("dev-b", 1)]
    )
