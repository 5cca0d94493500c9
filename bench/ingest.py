"""Ingest throughput: broker → gateway → storage, beside a bare subscriber.

Method: N messages are queued at the broker for a persistent session while the
consumer is stopped, then the consumer starts and we time how long it takes
to drain them. This measures the consumer alone, whatever the publisher's
speed. Baseline, in the same run and on the same broker: a bare paho
subscriber that only counts (stock paho with its network thread: the
target's reference), and for comparison the gateway's own MQTT link
(threadless, buffered socket) that only counts and acks. Then a steady-state run at the real rate of
10,000 rooms (telemetry every 60 s, an occupancy change per ~10 min, a
refresh every 5 min): the gateway's CPU and memory.

    python -m bench.ingest [--messages 100000] [--rooms 1000] [--rounds 3] [--steady-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gateway.mqtt_link import MqttLink
from mamaroom.config import MqttSettings
from mamaroom.contract import Kind, device_topic
from tests.support import InfluxDB, Mosquitto, Services, wait_for, write_rooms_csv

console = Console()


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    peak_rss_mb: float
    #: Measured inside the bench process: no RSS of its own.
    in_process: bool = False
    #: CPU time (user + system, all threads) of the consumer's process per
    #: message: steadier than msg/s on a shared machine.
    cpu_us: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def devices(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


_boots = iter(range(1, 1_000_000))


def publish(port: int, names: list[str], count: int, *, progress: str) -> None:
    """Queue `count` valid messages (occupancy and telemetry, round-robin over devices);
    each call is a new boot of every device, so no two calls share a message id."""
    boot = next(_boots)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=paho.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    seqs = dict.fromkeys(names, 0)
    now = int(time.time() * 1000)
    infos = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(progress, total=count)
        for i in range(count):
            dev = names[i % len(names)]
            seqs[dev] += 1
            env = {"v": 1, "boot": boot, "seq": seqs[dev], "ts": now + i}
            if i % 3 == 0:
                kind, body = Kind.OCCUPANCY, {"occupied": seqs[dev] % 2 == 0, "source": "door"}
            else:
                kind, body = (
                    Kind.TELEMETRY,
                    {"uptime_s": i, "rssi": -60, "heap_free": 80000, "fw": "1.0.0"},
                )
            infos.append(
                client.publish(device_topic(dev, kind), json.dumps({**env, **body}), qos=1)
            )
            if i % 1000 == 999:
                infos[-1].wait_for_publish(30)
                bar.update(task, completed=i + 1)
        for info in infos[-1000:]:
            info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def bare_subscriber(port: int, names: list[str], count: int) -> Result:
    """Baseline: a persistent session that only counts what it receives."""
    received = 0
    done = threading.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    def session() -> paho.Client:
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-bare",
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        c.on_message = on_message
        c.on_connect = lambda cl, *_: cl.subscribe("mr/v1/dev/#", 1)
        return c

    c = session()
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(c.is_connected, what="bare subscriber")
    time.sleep(0.5)  # let the SUBACK land before leaving
    c.disconnect()
    c.loop_stop()
    publish(port, names, count, progress="queueing for the bare subscriber")
    received = 0
    c = session()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    cpu0 = cpu_s(proc)
    started = time.perf_counter()
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(600)
    seconds = time.perf_counter() - started
    cpu = cpu_s(proc) - cpu0
    c.disconnect()
    c.loop_stop()
    return Result(
        "bare subscriber (counts only)",
        received,
        seconds,
        (proc.memory_info().rss - rss0) / 2**20,
        in_process=True,
        cpu_us=cpu / max(received, 1) * 1e6,
    )


def link_subscriber(port: int, names: list[str], count: int) -> Result:
    """The gateway's MQTT link alone (no thread, buffered socket, manual ack),
    acking each message as soon as it is taken: the ceiling of its connection."""
    settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}")

    def link() -> MqttLink:
        return MqttLink(
            settings,
            client_id="bench-link",
            subscriptions=[("mr/v1/dev/#", 1)],
            clean_session=False,
            manual_ack=True,
            max_pending=2000,
        )

    async def subscribe() -> None:
        first = link()
        first.start()
        await asyncio.wait_for(first.connected.wait(), 15)
        await asyncio.sleep(0.5)  # let the SUBACK land before leaving
        await first.stop()

    async def drain() -> tuple[int, float, float]:
        lnk = link()
        received = 0
        cpu0 = cpu_s(psutil.Process())
        started = time.perf_counter()
        lnk.start()
        while received < count:
            batch = await asyncio.wait_for(lnk.next_batch(1000), 600)
            lnk.ack_all(batch)
            received += len(batch)
        seconds = time.perf_counter() - started
        cpu = cpu_s(psutil.Process()) - cpu0
        await lnk.stop()
        return received, seconds, cpu

    asyncio.run(subscribe())
    publish(port, names, count, progress="queueing for the gateway's link")
    received, seconds, cpu = asyncio.run(drain())
    return Result(
        "gateway's MQTT link (counts, acks)",
        received,
        seconds,
        0.0,
        in_process=True,
        cpu_us=cpu / max(received, 1) * 1e6,
    )


def gateway_drain(
    broker: Mosquitto,
    workdir: Path,
    csv: Path,
    names: list[str],
    count: int,
    influx: InfluxDB | None,
) -> Result:
    workdir.mkdir(parents=True, exist_ok=True)
    # Its own client id: a fresh persistent session for each backend.
    svc = Services(
        broker,
        workdir,
        csv,
        influx=influx,
        MAMAROOM_LOG__LEVEL="warning",
        MAMAROOM_GATEWAY__CLIENT_ID=f"bench-gateway-{workdir.name}",
    )
    try:
        svc.start()  # creates the gateway's persistent session
        svc.gateway.stop()
        publish(broker.port, names, count, progress="queueing for the gateway")
        svc.gateway = svc.new_gateway(f"gateway-{'influx' if influx else 'sqlite'}")
        svc.gateway.start()
        assert svc.gateway.proc is not None
        proc = psutil.Process(svc.gateway.proc.pid)
        peak = 0.0
        first: tuple[float, float, float] | None = None  # (time, handled, cpu) at the first write

        def stored() -> bool:
            nonlocal peak, first
            peak = max(peak, proc.memory_info().rss / 2**20)
            m = svc.metrics()
            n = sum(v for k, v in m.items() if k.startswith("mamaroom_gateway_stored_total"))
            n += m["mamaroom_gateway_duplicates_total"]
            if first is None and n > 0:
                first = (time.perf_counter(), n, cpu_s(proc))
            elif first is not None and n < count * 0.9:
                # Each scrape costs the gateway ~1 ms of its one core: poll
                # often only at the start and end, where the timing is taken.
                time.sleep(0.25)
            return n >= count

        wait_for(
            stored, timeout=900, interval=0.02, what="gateway drained the queue", detail=svc.logs
        )
        # From the first batch written, so process start-up is not counted.
        assert first is not None
        seconds = time.perf_counter() - first[0]
        cpu = cpu_s(proc) - first[2]
        count = int(count - first[1])
        if influx is not None:  # and the spool reached InfluxDB
            wait_for(lambda: svc.metrics()["mamaroom_gateway_spool_depth"] == 0, timeout=900)
        return Result(
            f"gateway → {'InfluxDB (spooled)' if influx else 'SQLite'}",
            count,
            seconds,
            peak,
            cpu_us=cpu / max(count, 1) * 1e6,
        )
    finally:
        svc.stop()


def steady_state(
    broker: Mosquitto, workdir: Path, csv: Path, names: list[str], duration_s: float
) -> tuple[float, float, float]:
    """The real rate of len(names) rooms; (msg/s offered, gateway CPU %, RSS MB)."""
    workdir.mkdir(parents=True, exist_ok=True)
    svc = Services(
        broker,
        workdir,
        csv,
        MAMAROOM_LOG__LEVEL="warning",
        MAMAROOM_GATEWAY__CLIENT_ID="bench-gateway-steady",
    )
    try:
        svc.start()
    except BaseException:
        svc.stop()
        raise
    rate = len(names) * (1 / 60 + 1 / 600 + 1 / 300)  # telemetry, changes, refreshes
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-steady", protocol=paho.MQTTv311
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert svc.gateway.proc is not None
        proc = psutil.Process(svc.gateway.proc.pid)
        proc.cpu_percent()
        seqs = dict.fromkeys(names, 0)
        sent, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration_s:
            due = int(elapsed * rate)
            while sent < due:
                dev = names[sent % len(names)]
                seqs[dev] += 1
                kind = Kind.TELEMETRY if sent % 10 < 7 else Kind.OCCUPANCY
                body = (
                    {"rssi": -60, "heap_free": 80000}
                    if kind is Kind.TELEMETRY
                    else {"occupied": seqs[dev] % 2 == 0, "source": "door"}
                )
                client.publish(
                    device_topic(dev, kind),
                    json.dumps({"v": 1, "boot": 1, "seq": seqs[dev], "ts": None, **body}),
                    qos=1,
                )
                sent += 1
            time.sleep(0.01)
        cpu = proc.cpu_percent()
        rss = proc.memory_info().rss / 2**20
        return rate, cpu, rss
    finally:
        client.disconnect()
        client.loop_stop()
        svc.stop()


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{cpu}, {psutil.cpu_count()} cores, Python {platform.python_version()}"


def summarise(rounds: list[list[Result]]) -> list[list[str]]:
    """One row per consumer: medians over the rounds, ratios to the same
    round's bare subscriber (each round's in brackets)."""
    rows = []
    for i, first in enumerate(rounds[0]):
        runs = [r[i] for r in rounds]
        ratios = [r[i].rate / r[0].rate for r in rounds]
        cpu_ratios = [r[0].cpu_us / r[i].cpu_us for r in rounds]
        rss = max(r.peak_rss_mb for r in runs)
        rows.append(
            [
                first.name,
                f"{statistics.median(r.rate for r in runs):,.0f}",
                f"{statistics.median(ratios):.0%} ({', '.join(f'{x:.0%}' for x in ratios)})",
                f"{statistics.median(r.cpu_us for r in runs):.0f}",
                f"{statistics.median(cpu_ratios):.0%}",
                "n/a (in-process)" if first.in_process else f"{rss:.0f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=100_000,
        help="messages drained per consumer (default 100000)",
    )
    parser.add_argument(
        "--rooms", type=int, default=1000, help="devices the messages come from (default 1000)"
    )
    parser.add_argument(
        "--steady-rooms",
        type=int,
        default=10_000,
        help="rooms in the steady-state run (default 10000)",
    )
    parser.add_argument(
        "--steady-s",
        type=float,
        default=60,
        help="length of the steady-state run, seconds (default 60)",
    )
    parser.add_argument("--skip-influx", action="store_true", help="no InfluxDB run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every consumer in turn; each ratio is taken within "
        "its round and the median is reported (default 3)",
    )
    args = parser.parse_args(argv)

    rounds: list[list[Result]] = []
    with tempfile.TemporaryDirectory(prefix="mamaroom-bench-") as tmp:
        root = Path(tmp)
        names = devices(args.rooms)
        csv = write_rooms_csv(root / "rooms.csv", [(f"B-{i:05d}", d) for i, d in enumerate(names)])
        broker = Mosquitto(root / "broker").start()
        influx = None if args.skip_influx else InfluxDB(root / "influx").start()
        try:
            console.print(
                f"[bold]ingest[/bold]: {args.messages} messages from {args.rooms} "
                "devices, queued then drained"
            )
            # Other load on a shared machine comes and goes within minutes: every
            # consumer runs once per round, right after its round's baseline.
            for n in range(1, args.rounds + 1):
                console.print(f"round {n} of {args.rounds}")
                results = [
                    bare_subscriber(broker.port, names, args.messages),
                    link_subscriber(broker.port, names, args.messages),
                    gateway_drain(broker, root / f"sqlite-{n}", csv, names, args.messages, None),
                ]
                if influx:
                    results.append(
                        gateway_drain(
                            broker, root / f"influx-{n}", csv, names, args.messages, influx
                        )
                    )
                rounds.append(results)
            steady_names = devices(args.steady_rooms)
            steady_csv = write_rooms_csv(
                root / "steady.csv", [(f"S-{i:05d}", d) for i, d in enumerate(steady_names)]
            )
            console.print(f"steady state: {args.steady_rooms} rooms for {args.steady_s:.0f} s")
            rate, cpu, rss = steady_state(
                broker, root / "steady", steady_csv, steady_names, args.steady_s
            )
        finally:
            if influx:
                influx.stop()
            broker.stop()

    table = Table(
        title=f"Ingest throughput (same broker; median of {len(rounds)} rounds, "
        "each ratio within its round)"
    )
    for col in (
        "consumer",
        "msg/s",
        "vs bare (per round)",
        "CPU µs/msg",
        "bare CPU / its CPU",
        "peak RSS MB",
    ):
        table.add_column(col)
    rows = summarise(rounds)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"steady state, {args.steady_rooms} rooms at the real rate ({rate:.0f} msg/s): "
        f"gateway CPU {cpu:.0f} % of one core, RSS {rss:.0f} MB"
    )
    console.print(f"machine: {machine()}")
    lines = [
        "## Ingest throughput",
        "",
        f"Machine: {machine()}. {args.messages} messages "
        f"from {args.rooms} devices queued at the broker, then drained.",
        "",
        f"Each of {len(rounds)} rounds runs every consumer in turn; a ratio is "
        "taken within its round (same minutes, same load), and the table gives "
        "medians, with each round's ratio in brackets.",
        "",
        "| consumer | msg/s | vs bare subscriber | CPU µs/msg | bare CPU / its CPU | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"Steady state, {args.steady_rooms} rooms at the real rate ({rate:.0f} msg/s "
        f"for {args.steady_s:.0f} s): gateway CPU {cpu:.0f} % of one core, RSS {rss:.0f} MB.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
