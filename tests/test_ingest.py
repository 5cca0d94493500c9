"""At-least-once ingest on real parts: kill -9 with messages in flight, an
InfluxDB outage, two gateways sharing the load. Nothing lost, nothing twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mamaroom.contract import Kind
from tests.support import (
    Device,
    InfluxDB,
    Mosquitto,
    Services,
    free_port,
    wait_for,
    write_rooms_csv,
)
from tests.test_end_to_end import stored_occupancy

DEVICES = ["dev-a", "dev-b", "dev-c", "dev-d"]


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB]:
    db = InfluxDB(tmp_path / "influxdb").start()
    yield db
    db.stop()


@pytest.fixture
def four_rooms(tmp_path: Path) -> Path:
    return write_rooms_csv(
        tmp_path / "rooms4.csv", [(f"T2-0{i + 1}01", dev) for i, dev in enumerate(DEVICES)]
    )


def publish_burst(devices: list[Device], per_device: int) -> dict[str, bool]:
    """Interleaved occupancy changes; returns each device's last state."""
    last: dict[str, bool] = {}
    for i in range(per_device):
        for dev in devices:
            last[dev.device] = i % 2 == 0
            dev.occupancy(last[dev.device])
    return last


def stored_keys(svc: Services, influx: InfluxDB | None) -> list[tuple[str, int]]:
    """(device, seq) of every stored occupancy event, duplicates included."""
    if influx is None:
        return sorted((e["device"], e["seq"]) for e in stored_occupancy(svc.workdir / "data"))
    series = influx.query('SELECT "seq", "device" FROM "occupancy"')
    rows = series[0]["values"] if series else []
    return sorted((row[2], row[1]) for row in rows)


def expected_keys(devices: list[Device]) -> list[tuple[str, int]]:
    return sorted((d.device, seq) for d in devices for seq in range(1, d.seq + 1))


@pytest.mark.parametrize("backend", ["sqlite", "influxdb"])
def test_kill_9_with_100_unacknowledged_messages_loses_and_repeats_nothing(
    backend: str,
    broker: Mosquitto,
    tmp_path: Path,
    four_rooms: Path,
    request: pytest.FixtureRequest,
) -> None:
    influx = request.getfixturevalue("influx") if backend == "influxdb" else None
    svc = Services(broker, tmp_path, four_rooms, influx=influx).start()
    devices = [Device(broker.port, d) for d in DEVICES]
    try:
        devices[0].occupancy(True)
        svc.wait_room_state("T2-0101", "occupied")
        # Block the gateway's durable write with a real lock on its database:
        # it can neither store nor spool, so it must not acknowledge anything.
        durable = (
            svc.workdir / "data" / ("store.sqlite" if influx is None else "influx-spool.sqlite")
        )
        lock = sqlite3.connect(durable, isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            publish_burst(devices, 60)  # 240 messages
            wait_for(
                lambda: svc.metrics()["mamaroom_gateway_pending"] >= 100,
                timeout=60,
                what=">= 100 messages delivered but not acknowledged",
                detail=lambda: str(svc.metrics()["mamaroom_gateway_pending"]),
            )
            svc.gateway.kill()  # SIGKILL while they are in flight
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        svc.gateway = svc.new_gateway("gateway-restarted")
        svc.start_gateway()
        expected = expected_keys(devices)
        wait_for(
            lambda: stored_keys(svc, influx) == expected,
            timeout=90,
            what=f"all {len(expected)} messages stored exactly once",
            detail=lambda: f"stored {len(stored_keys(svc, influx))}\n{svc.logs()}",
        )
        assert svc.metrics()["mamaroom_gateway_redelivered_total"] > 0  # DUP re-sends seen
        for dev in devices:
            svc.wait_room_state(f"T2-0{DEVICES.index(dev.device) + 1}01", "free")
    finally:
        for dev in devices:
            dev.close()
        svc.stop()


def test_influxdb_outage_spools_to_disk_and_backfills_in_order(
    broker: Mosquitto, tmp_path: Path, four_rooms: Path, influx: InfluxDB
) -> None:
    svc = Services(broker, tmp_path, four_rooms, influx=influx).start()
    devices = [Device(broker.port, d) for d in DEVICES]
    try:
        publish_burst(devices, 10)
        wait_for(lambda: influx.count("occupancy", "occupied") == 40, what="40 points in InfluxDB")
        influx.stop(9)  # InfluxDB dies mid-stream
        last = publish_burst(devices, 25)
        # Still acknowledged (spooled to disk), so the broker holds nothing back.
        wait_for(
            lambda: (
                (m := svc.metrics())["mamaroom_gateway_spool_depth"] >= 100
                and m["mamaroom_gateway_pending"] == 0
            ),
            timeout=60,
            what="messages spooled while InfluxDB is down",
            detail=lambda: str({k: v for k, v in svc.metrics().items() if "spool" in k}),
        )
        assert svc.metrics()["mamaroom_gateway_influx_errors_total"] > 0
        # Room state does not wait for InfluxDB.
        svc.wait_room_state("T2-0101", "occupied" if last["dev-a"] else "free")
        influx.start()
        wait_for(
            lambda: svc.metrics()["mamaroom_gateway_spool_depth"] == 0,
            timeout=90,
            what="spool drained",
            detail=svc.logs,
        )
        assert stored_keys(svc, influx) == expected_keys(devices)  # none lost, none twice
        # Drained oldest first: within each device, time follows seq.
        series = influx.query('SELECT "seq" FROM "occupancy" GROUP BY "device"')
        for s in series:
            seqs = [row[1] for row in s["values"]]
            assert seqs == sorted(seqs)
    finally:
        for dev in devices:
            dev.close()
        svc.stop()


def test_two_gateways_share_the_ingest_without_loss_or_duplicates(
    broker: Mosquitto, tmp_path: Path, four_rooms: Path
) -> None:
    svc = Services(
        broker,
        tmp_path,
        four_rooms,
        MAMAROOM_GATEWAY__SHARE_GROUP="ingest",
        MAMAROOM_GATEWAY__CLIENT_ID="gateway-1",
    ).start()
    second_port = free_port()
    second = svc.new_gateway(
        "gateway-2",
        MAMAROOM_GATEWAY__CLIENT_ID="gateway-2",
        MAMAROOM_GATEWAY__METRICS_PORT=str(second_port),
    ).start()
    devices = [Device(broker.port, d) for d in DEVICES]
    try:
        wait_for(
            lambda: svc.metrics(second_port)["mamaroom_gateway_ready"] == 1,
            what="second gateway ready",
            detail=second.log_tail,
        )
        last = publish_burst(devices, 50)  # 200 messages, 50 state changes per room
        expected = expected_keys(devices)
        wait_for(
            lambda: stored_keys(svc, None) == expected,
            timeout=60,
            what="200 messages stored exactly once",
            detail=svc.logs,
        )
        stored = [
            svc.metrics(p)['mamaroom_gateway_stored_total{kind="occupancy"}']
            for p in (svc.metrics_port, second_port)
        ]
        assert sum(stored) == 200 and min(stored) > 0, stored  # both took a share
        for i, name in enumerate(DEVICES):
            svc.wait_room_state(f"T2-0{i + 1}01", "occupied" if last[name] else "free")
        # One more change each; both gateways agree on the final state.
        for dev in devices:
            dev.publish(Kind.OCCUPANCY, dev.envelope(occupied=not last[dev.device], source="door"))
        for i, name in enumerate(DEVICES):
            svc.wait_room_state(f"T2-0{i + 1}01", "free" if last[name] else "occupied")
    finally:
        for dev in devices:
            dev.close()
        second.stop()
        svc.stop()
