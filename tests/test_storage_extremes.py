"""The storage layer takes any value the contract admits, on both backends
(issue 12.1): `ts` of 2**53 or in microseconds, `boot` and `seq` at 2**63-1.
A device clock out of range is kept, dated by arrival, and flagged; what a
backend refuses anyway is set aside as a dead letter, never retried forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mamaroom.clock import from_ms
from mamaroom.config import InfluxSettings
from mamaroom.contract import (
    TS_SKEW_MS,
    ContractError,
    Kind,
    Occupancy,
    RejectReason,
    Telemetry,
    message_time,
    parse_payload,
)
from mamaroom.storage import Record
from mamaroom.storage.embedded import EmbeddedStore
from mamaroom.storage.influx import InfluxStore
from tests.support import InfluxDB

MAX = 2**63 - 1


def extremes(now: int) -> list[Record]:
    def occ(boot: int, seq: int, ts: int | None) -> Record:
        return Record(
            "dev-x",
            "R1",
            Kind.OCCUPANCY,
            Occupancy(v=1, boot=boot, seq=seq, ts=ts, occupied=seq % 2 == 0, source="door"),
            now,
        )

    return [
        occ(1, 1, 2**53),
        occ(1, 2, now * 1000),
        occ(1, 3, 0),
        occ(1, MAX, now),
        occ(MAX, MAX - 1, None),
        occ(MAX, 0, now + TS_SKEW_MS + 1),
        Record(
            "dev-x",
            "R1",
            Kind.TELEMETRY,
            Telemetry(
                v=1,
                boot=MAX,
                seq=1,
                ts=2**53,
                uptime_s=MAX,
                heap_free=MAX,
                rssi=-127,
                big=2**70,
                neg=-(2**63),
            ),
            now,
        ),
    ]


def test_a_device_time_is_trusted_within_the_skew_only() -> None:
    now = 1_800_000_000_000
    assert message_time(now + TS_SKEW_MS, now) == now + TS_SKEW_MS
    assert message_time(now - TS_SKEW_MS, now) == now - TS_SKEW_MS
    for ts in (now + TS_SKEW_MS + 1, now - TS_SKEW_MS - 1, 2**53, now * 1000, 0, None):
        assert message_time(ts, now) == now
    assert from_ms(2**53) is not None and from_ms(-5) is not None  # never "out of range"


def test_telemetry_counters_are_64_bit_like_boot_and_seq() -> None:
    for name in ("uptime_s", "heap_free"):
        body = f'{{"v":1,"boot":1,"seq":1,"ts":null,"{name}":{2**63 - 1}}}'.encode()
        assert getattr(parse_payload(Kind.TELEMETRY, body), name) == 2**63 - 1
        with pytest.raises(ContractError) as err:
            parse_payload(Kind.TELEMETRY, body.replace(b"807}", b"808}"))
        assert err.value.reason is RejectReason.INVALID_PAYLOAD


async def test_sqlite_store_takes_every_extreme_value(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store.sqlite")
    await store.open()
    try:
        now = int(time.time() * 1000)
        records = extremes(now)
        assert await store.series.write(records) == [True] * len(records)
        rows = {(e["boot"], e["seq"]): e for e in await store.series.occupancy_events()}
        assert rows[(1, 1)]["time_ms"] == now and rows[(1, 1)]["device_ts_ms"] == 2**53
        assert rows[(1, 3)]["time_ms"] == now  # ts 0: 1970 is not now
        assert rows[(1, MAX)]["time_ms"] == now
        [device] = await store.devices.devices()
        assert device.occupied_ms is not None and device.occupied_ms <= now
        assert await store.dead_letters.count_open() == 0
    finally:
        await store.close()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB]:
    db = InfluxDB(tmp_path / "influxdb").start()
    yield db
    db.stop()


async def test_influxdb_spool_and_drain_take_every_extreme_value(
    tmp_path: Path, influx: InfluxDB
) -> None:
    store = InfluxStore(
        InfluxSettings(url=influx.url, flush_interval_s=0.1),
        tmp_path / "spool.sqlite",
        gateway="gw",
    )
    await store.open()
    drainer = asyncio.create_task(store.run_drainer())
    try:
        now = int(time.time() * 1000)
        records = extremes(now)
        assert await store.write(records) == [True] * len(records)

        for _ in range(1200):  # poll, up to a minute
            if (await store.stats()).depth == 0:
                break
            await asyncio.sleep(0.05)
        stats = await store.stats()
        assert stats.depth == 0 and stats.refused == 0, stats
        series = influx.query('SELECT "seq", "device_ts_ms", "device_clock" FROM "occupancy"')
        values = series[0]["values"]
        assert len(values) == 6
        # Dated by arrival (ns = ms * 10^6 + seq mod 10^6), the device's time kept beside.
        by_seq = {(v[1], v[0] // 1_000_000): v for v in values}
        assert by_seq[(1, now)][2] == 2**53 and by_seq[(1, now)][3] is False
        telemetry = influx.query('SELECT "uptime_s", "x_neg" FROM "telemetry_30d"."telemetry"')
        assert telemetry[0]["values"][0][1:] == [MAX, -(2**63)]
    finally:
        drainer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drainer
        await store.close()
