"""The loss audit counts messages missing from storage by their seq gaps,
in the same transaction as the store, duplicates never counted twice."""

from __future__ import annotations

from pathlib import Path

from mamaroom.config import InfluxSettings
from mamaroom.contract import Kind, Occupancy, Telemetry
from mamaroom.storage import Record
from mamaroom.storage.embedded import EmbeddedStore
from mamaroom.storage.influx import InfluxStore
from mamaroom.storage.seq_audit import lost_by_device, read_gaps_file
from mamaroom.storage.sqlite import SqliteSeries
from tests.support import DeviceFactory, Services, wait_for


def rec(device: str, boot: int, seq: int) -> Record:
    msg = (
        Occupancy(
            v=1,
            boot=boot,
            seq=seq,
            ts=1_700_000_000_000 + seq % 10**6,
            occupied=seq % 2 == 0,
            source="door",
        )
        if seq % 3
        else Telemetry(v=1, boot=boot, seq=seq, ts=None, rssi=-60)
    )
    kind = Kind.OCCUPANCY if isinstance(msg, Occupancy) else Kind.TELEMETRY
    return Record(device, "R1", kind, msg, 1_700_000_000_000 + seq % 10**6)


async def check(store: SqliteSeries | InfluxStore, path: Path) -> None:
    # dev-a boot 1: 1..10 with 4, 5 and 8 missing; sent out of order and twice.
    seqs = [1, 2, 3, 6, 7, 9, 10]
    await store.write([rec("dev-a", 1, s) for s in seqs[:4]])
    await store.write([rec("dev-a", 1, s) for s in reversed(seqs)])  # duplicates and the rest
    # dev-a boot 2 has nothing missing; dev-b's first message comes late.
    await store.write([rec("dev-a", 2, s) for s in range(1, 6)] + [rec("dev-b", 7, 3)])
    await store.write([rec("dev-b", 7, 1)])
    gaps = await store.seq_gaps()
    assert [(g.device, g.boot, g.first_seq, g.last_seq, g.stored, g.lost) for g in gaps] == [
        ("dev-a", 1, 1, 10, 7, 3),
        ("dev-a", 2, 1, 5, 5, 0),
        ("dev-b", 7, 1, 3, 2, 1),
    ]
    # The late message closes its gap.
    await store.write([rec("dev-b", 7, 2)])
    assert lost_by_device(await store.seq_gaps()) == {"dev-a": 3, "dev-b": 0}
    # Another process (the server) reads the same figures from the file.
    assert lost_by_device(await read_gaps_file(path)) == {"dev-a": 3, "dev-b": 0}


async def test_the_embedded_store_counts_seq_gaps(tmp_path: Path) -> None:
    embedded = EmbeddedStore(tmp_path / "store.sqlite")
    await embedded.open()
    try:
        await check(embedded.series, embedded.path)
    finally:
        await embedded.close()


async def test_the_influxdb_spool_counts_seq_gaps_with_its_ledger(tmp_path: Path) -> None:
    # No InfluxDB needed: the audit is kept in the spool, beside the dedupe ledger.
    store = InfluxStore(
        InfluxSettings(url="http://127.0.0.1:9"), tmp_path / "spool.sqlite", gateway="gw"
    )
    await store.open()
    try:
        await check(store, tmp_path / "spool.sqlite")
    finally:
        await store.close()


async def test_no_audit_yet_reads_as_nothing_lost(tmp_path: Path) -> None:
    assert await read_gaps_file(tmp_path / "missing.sqlite") == []


def test_lost_messages_show_in_device_health_and_metrics(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev = device_factory("dev-a")
    dev.occupancy(True)
    dev.seq += 3  # three messages that never reach the broker
    dev.telemetry()
    dev.occupancy(False)
    services.wait_room_state("T1-0101", "free")

    def lost() -> tuple[int, float]:
        health = services.admin("GET", "/api/devices").json()["devices"]
        [dev_a] = [d for d in health if d["device"] == "dev-a"]
        metrics = services.http.get("/metrics").text
        [total] = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("mamaroom_messages_lost ")
        ]
        return dev_a["lost_messages"], total

    assert wait_for(
        lambda: lost() == (3, 3.0) and lost(),
        what="3 lost messages counted",
        detail=lambda: str(lost()),
    )


async def check_impossible_gap(store: SqliteSeries | InfluxStore) -> None:
    # seq 0 then 2**63-1 in one boot, in one batch and across batches: resets,
    # never 9.2e18 lost messages; a real gap before the jump is still counted.
    await store.write([rec("dev-a", 1, s) for s in (0, 1, 2, 4, 2**63 - 1)])
    await store.write([rec("dev-a", 1, s) for s in (5, 6)])
    await store.write([rec("dev-b", 1, 1), rec("dev-b", 1, 3)])
    await store.write([rec("dev-b", 1, 10**12)])
    gaps = {(g.device, g.boot): g for g in await store.seq_gaps()}
    assert gaps[("dev-a", 1)].lost == 1 and gaps[("dev-a", 1)].resets == 2
    assert gaps[("dev-b", 1)].lost == 1 and gaps[("dev-b", 1)].resets == 1
    assert lost_by_device(gaps.values()) == {"dev-a": 1, "dev-b": 1}


async def test_an_impossible_seq_gap_is_a_reset_not_a_loss(tmp_path: Path) -> None:
    embedded = EmbeddedStore(tmp_path / "store.sqlite")
    influx = InfluxStore(
        InfluxSettings(url="http://127.0.0.1:9"), tmp_path / "spool.sqlite", gateway="gw"
    )
    for home, store in ((embedded, embedded.series), (influx, influx)):
        await home.open()
        try:
            await check_impossible_gap(store)
        finally:
            await home.close()


async def test_an_audit_from_before_resets_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE seq_audit (device TEXT NOT NULL, boot INTEGER NOT NULL,"
        " first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, stored INTEGER NOT NULL,"
        " updated_ms INTEGER NOT NULL, PRIMARY KEY (device, boot)) WITHOUT ROWID"
    )
    old.execute("INSERT INTO seq_audit VALUES ('dev-a', 1, 1, 10, 8, 0)")
    old.commit()
    # A reader of the old file (the server, before the gateway is upgraded).
    assert lost_by_device(await read_gaps_file(path)) == {"dev-a": 2}
    old.close()
    embedded = EmbeddedStore(path)
    await embedded.open()
    try:
        await embedded.series.write([rec("dev-a", 1, 11), rec("dev-a", 1, 5 * 10**6)])
        [gap] = await embedded.series.seq_gaps()
        assert (gap.lost, gap.resets) == (2, 1)
    finally:
        await embedded.close()
