"""Hostile and extreme device input at a real gateway (issue 12), on both
storage backends where storage is involved: device clocks that are off or
absurd, records a backend refuses, a flooding node, and a clean stop that
must be announced (issue 11.8)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mamaroom.contract import Kind
from tests.support import ROOT, Device, InfluxDB, Mosquitto, Services, wait_for

YEAR_MS = 365 * 86_400_000
STATE_A, STATE_B = "mr/v1/room/T1-0101/state", "mr/v1/room/T1-0201/state"


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB]:
    db = InfluxDB(tmp_path / "influxdb").start()
    yield db
    db.stop()


def start(
    backend: str,
    broker: Mosquitto,
    tmp_path: Path,
    rooms_csv: Path,
    request: pytest.FixtureRequest,
    **env: str,
) -> Services:
    influx = request.getfixturevalue("influx") if backend == "influxdb" else None
    return Services(broker, tmp_path, rooms_csv, influx=influx, **env).start()


class Retained:
    """The latest payload of some topics, as a subscriber sees them."""

    def __init__(self, port: int, *topics: str) -> None:
        self.latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)

        def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
            with self._lock:
                self.latest[m.topic] = bytes(m.payload)

        def on_connect(c: paho.Client, *_: object) -> None:
            for t in topics:
                c.subscribe(t, 1)

        self.client.on_message = on_message
        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def json(self, topic: str) -> dict[str, Any]:
        with self._lock:
            return dict(json.loads(self.latest[topic]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def stored(svc: Services, kind: str) -> float:
    return svc.metrics()[f'mamaroom_gateway_stored_total{{kind="{kind}"}}']


@pytest.mark.parametrize("backend", ["sqlite", "influxdb"])
def test_device_clocks_never_pin_a_room_or_stop_ingest(
    backend: str, broker: Mosquitto, tmp_path: Path, rooms_csv: Path, request: pytest.FixtureRequest
) -> None:
    svc = start(backend, broker, tmp_path, rooms_csv, request, MAMAROOM_GATEWAY__SUPERVISION_S="4")
    a, b = Device(broker.port, "dev-a"), Device(broker.port, "dev-b")
    watch = Retained(broker.port, STATE_A, STATE_B)
    try:
        now = int(time.time() * 1000)
        # A clock a year ahead, then every extreme the contract admits.
        a.publish(
            Kind.OCCUPANCY, {**a.envelope(occupied=False, source="door"), "ts": now + YEAR_MS}
        )
        for ts in (2**53, now * 1000, 0):
            a.publish(Kind.TELEMETRY, {**a.envelope(rssi=-60), "ts": ts})
        a.publish(
            Kind.TELEMETRY,
            {**a.envelope(rssi=-60, uptime_s=2**63 - 1), "ts": None, "seq": 2**63 - 1},
        )
        svc.wait_room_state("T1-0101", "free")
        wait_for(
            lambda: svc.metrics()['mamaroom_gateway_flagged_total{reason="ts_out_of_range"}'] == 4,
            what="4 messages flagged ts_out_of_range",
            detail=svc.logs,
        )
        # A reboot with a good clock: its messages win, whatever the old boot's ts.
        a.boot, a.seq = 2, 0
        for occupied in (True, False, True):
            a.occupancy(occupied)
        svc.wait_room_state("T1-0101", "occupied")
        state = wait_for(
            lambda: (s := watch.json(STATE_A))["state"] == "occupied" and s,
            what="retained state occupied",
        )
        assert epoch_ms(state["since"]) <= time.time() * 1000 + 1000  # not in 2027
        assert epoch_ms(state["last_seen"]) <= time.time() * 1000 + 1000
        # A late message from the boot it left, ts null: stored, but no flip.
        before = stored(svc, "occupancy")
        a.publish(
            Kind.OCCUPANCY,
            {"v": 1, "boot": 1, "seq": 99, "ts": None, "occupied": False, "source": "door"},
        )
        wait_for(lambda: stored(svc, "occupancy") == before + 1, what="old-boot message stored")
        assert watch.json(STATE_A)["state"] == "occupied"
        # Ingest goes on for everyone.
        b.occupancy(True)
        svc.wait_room_state("T1-0201", "occupied")
        # A silent node goes offline on the gateway's clock, not the device's.
        silent = wait_for(
            lambda: (s := watch.json(STATE_A))["state"] == "offline" and s,
            timeout=60,
            what="dev-a's room offline once silent",
            detail=svc.logs,
        )
        assert silent["reason"] == "silent"
        assert svc.gateway.alive() and svc.metrics()["mamaroom_gateway_ready"] == 1
        assert "Traceback" not in svc.gateway.log()
    finally:
        watch.close()
        a.close()
        b.close()
        svc.stop()


def dead_letters(svc: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "dead-letters", *args],
        env=svc.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )


def listed(svc: Services) -> list[dict[str, Any]]:
    return [json.loads(line) for line in dead_letters(svc, "--json").stdout.splitlines()]


def test_a_record_sqlite_refuses_is_a_dead_letter_not_a_wedge(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, request: pytest.FixtureRequest
) -> None:
    svc = start("sqlite", broker, tmp_path, rooms_csv, request)
    a, b = Device(broker.port, "dev-a"), Device(broker.port, "dev-b")
    try:
        # The store refuses every occupancy row of dev-b (a constraint of its own).
        import sqlite3

        db = sqlite3.connect(svc.workdir / "data" / "store.sqlite", timeout=30)
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON occupancy WHEN NEW.device='dev-b'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned for the test'); END"
        )
        db.commit()
        db.close()
        for i in range(20):  # interleaved: the poison shares every batch
            a.occupancy(i % 2 == 0)
            b.occupancy(i % 2 == 1)
        wait_for(
            lambda: (
                stored(svc, "occupancy") == 20
                and svc.metrics()["mamaroom_gateway_dead_letters"] == 20
            ),
            what="dev-a's 20 stored, dev-b's 20 set aside",
            detail=svc.logs,
        )
        assert svc.metrics()["mamaroom_gateway_pending"] == 0  # all acknowledged
        # Still a valid message from a live node: room state follows it.
        svc.wait_room_state("T1-0201", "occupied")
        letters = listed(svc)
        assert len(letters) == 20 and {d["device"] for d in letters} == {"dev-b"}
        assert all("poisoned for the test" in d["reason"] for d in letters)
        assert json.loads(letters[0]["payload"])["message"]["boot"] == 1
        dead_letters(svc, "--ack", f"store:{letters[0]['id']}")
        assert len(listed(svc)) == 19
        dead_letters(svc, "--ack-all")
        assert listed(svc) == []
        wait_for(
            lambda: svc.metrics()["mamaroom_gateway_dead_letters"] == 0,
            timeout=30,
            what="the metric follows the acknowledgement",
        )
        assert svc.gateway.alive()
    finally:
        a.close()
        b.close()
        svc.stop()


def test_a_point_influxdb_refuses_is_a_dead_letter(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, influx: InfluxDB
) -> None:
    svc = Services(broker, tmp_path, rooms_csv, influx=influx).start()
    a = Device(broker.port, "dev-a")
    try:
        a.publish(Kind.TELEMETRY, a.envelope(rssi=-60, temp_c=21))
        wait_for(
            lambda: influx.count("telemetry", "x_temp_c", rp="telemetry_30d") == 1,
            what="the first telemetry in InfluxDB",
            detail=svc.logs,
        )
        # Valid by the contract (extras are free), refused by InfluxDB: field type conflict.
        a.publish(Kind.TELEMETRY, a.envelope(rssi=-60, temp_c="warm"))
        a.occupancy(True)
        wait_for(
            lambda: svc.metrics()["mamaroom_gateway_dead_letters"] == 1,
            timeout=60,
            what="the refused point counted as a dead letter",
            detail=svc.logs,
        )
        wait_for(lambda: influx.count("occupancy", "occupied") == 1, what="ingest goes on")
        [letter] = listed(svc)
        assert letter["file"] == "spool" and letter["source"] == "influxdb"
        assert letter["device"] == "dev-a" and "x_temp_c" in letter["payload"]
        dead_letters(svc, "--ack-all")
        wait_for(
            lambda: svc.metrics()["mamaroom_gateway_dead_letters"] == 0,
            timeout=30,
            what="the metric follows the acknowledgement",
        )
    finally:
        a.close()
        svc.stop()


def test_a_flooding_node_is_budgeted_but_its_calls_never_are(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, request: pytest.FixtureRequest
) -> None:
    svc = start(
        "sqlite",
        broker,
        tmp_path,
        rooms_csv,
        request,
        MAMAROOM_GATEWAY__DEVICE_BURST="20",
        MAMAROOM_GATEWAY__DEVICE_RATE_PER_S="0.1",
    )
    a, b = Device(broker.port, "dev-a"), Device(broker.port, "dev-b")
    try:
        for _ in range(200):
            a.telemetry()
        for i in range(60):
            a.call("shown", f"flood-{i}")
        b.occupancy(True)  # the other room's change still shows
        svc.wait_room_state("T1-0201", "occupied")
        wait_for(
            lambda: (
                stored(svc, "call") == 60
                and stored(svc, "telemetry") >= 20
                and svc.metrics()['mamaroom_gateway_rejected_total{reason="rate_limited"}']
                + stored(svc, "telemetry")
                == 200
            ),
            what="every call stored, telemetry over the budget dropped",
            detail=svc.logs,
        )
        m = svc.metrics()
        assert m['mamaroom_gateway_rate_limited_total{device="dev-a"}'] >= 170
        assert 'mamaroom_gateway_rate_limited_total{device="dev-b"}' not in m
        assert svc.gateway.log().count("over the device's message budget") == 1  # not 180
    finally:
        a.close()
        b.close()
        svc.stop()


def test_a_clean_stop_is_announced_and_the_server_sees_the_gateway_down(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    svc = Services(broker, tmp_path, rooms_csv).start()
    status = "mr/v1/gateway/mamaroom-gateway/status"
    watch = Retained(broker.port, status)
    up = 'mamaroom_gateway_up{gateway="mamaroom-gateway"}'
    try:
        wait_for(lambda: watch.latest.get(status) == b"online", what="gateway online")
        wait_for(lambda: f"{up} 1.0" in svc.http.get("/metrics").text, what="server: up 1")
        assert svc.gateway.stop() == 0  # SIGTERM: a clean stop
        wait_for(
            lambda: watch.latest.get(status) == b"offline",
            timeout=10,
            what="retained offline published by the stopping gateway",
        )
        wait_for(
            lambda: f"{up} 0.0" in svc.http.get("/metrics").text,
            timeout=10,
            what="server: mamaroom_gateway_up 0",
        )
        assert "announced offline" in svc.gateway.log()
    finally:
        watch.close()
        svc.stop()
