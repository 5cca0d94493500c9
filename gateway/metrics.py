"""The gateway's Prometheus metrics, on its own port (config `gateway.metrics_port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mamaroom.contract import TS_OUT_OF_RANGE, GatewayStats, Kind, RejectReason

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter(
            "mamaroom_gateway_received",
            "Messages received from devices, by kind",
            ["kind"],
            registry=r,
        )
        self.stored = Counter(
            "mamaroom_gateway_stored",
            "New messages stored (or spooled), by kind",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "mamaroom_gateway_rejected", "Messages refused, by reason", ["reason"], registry=r
        )
        self.flagged = Counter(
            "mamaroom_gateway_flagged",
            "Messages kept but flagged, by reason (ts_out_of_range: "
            "dated by arrival, the device clock is off)",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "mamaroom_gateway_rate_limited",
            "Messages dropped over a device's budget, by device",
            ["device"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "mamaroom_gateway_dead_letters",
            "Records a backend refused, set aside and not yet "
            "acknowledged (`mamaroom dead-letters`)",
            registry=r,
        )
        self.clock_steps = Counter(
            "mamaroom_gateway_clock_steps",
            "Steps of the wall clock noticed (supervision is "
            "monotonic; kept times are moved with the step)",
            registry=r,
        )
        self.duplicates = Counter(
            "mamaroom_gateway_duplicates",
            "Repeated (device, boot, seq) not stored again",
            registry=r,
        )
        self.redelivered = Counter(
            "mamaroom_gateway_redelivered", "Messages the broker re-sent (DUP flag set)", registry=r
        )
        self.room_states = Counter(
            "mamaroom_gateway_room_state_published", "Room state changes published", registry=r
        )
        self.storage_errors = Counter(
            "mamaroom_gateway_storage_errors", "Failed storage calls (retried)", registry=r
        )
        self.ready = Gauge(
            "mamaroom_gateway_ready",
            "1 when connected to the broker with the registry loaded",
            registry=r,
        )
        self.pending = Gauge(
            "mamaroom_gateway_pending",
            "Messages received, not yet handled and acknowledged",
            registry=r,
        )
        self.write_seconds = Histogram(
            "mamaroom_gateway_write_seconds",
            "Time to store (or spool) one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mamaroom_gateway_batch_size",
            "Messages per storage batch",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.spool_depth = Gauge(
            "mamaroom_gateway_spool_depth",
            "Points spooled, not yet accepted by InfluxDB",
            registry=r,
        )
        self.spool_age = Gauge(
            "mamaroom_gateway_spool_age_seconds", "Age of the oldest spooled point", registry=r
        )
        self.refused = Gauge(
            "mamaroom_gateway_influx_refused",
            "Points InfluxDB refused as malformed (kept aside)",
            registry=r,
        )
        self.influx_errors = Counter(
            "mamaroom_gateway_influx_errors", "Failed InfluxDB writes (retried)", registry=r
        )
        self.influx_write_seconds = Histogram(
            "mamaroom_gateway_influx_write_seconds",
            "Time of one InfluxDB write request",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.influx_batch_size = Histogram(
            "mamaroom_gateway_influx_batch_size",
            "Points per InfluxDB write request",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        # Every series exists from the start, so a dashboard shows 0, not "no data".
        for reason in RejectReason:
            self.rejected.labels(reason.value)
        self.flagged.labels(TS_OUT_OF_RANGE)
        for kind in Kind:
            if kind is not Kind.CMD:  # commands go to devices, not to the gateway
                self.received.labels(kind.value)
                self.stored.labels(kind.value)

    def summary(self) -> GatewayStats:
        """The headline figures, published for the server's /metrics."""

        def total(counter: Counter) -> float:
            return sum(
                s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")
            )

        def now(gauge: Gauge) -> float:
            # Through collect(): a gauge fed by set_function (pending) has no
            # stored value, and its _value read 0 for ever.
            return next(s.value for m in gauge.collect() for s in m.samples)

        return GatewayStats(
            received=total(self.received),
            stored=total(self.stored),
            rejected={
                s.labels["reason"]: s.value
                for m in self.rejected.collect()
                for s in m.samples
                if s.name.endswith("_total")
            },
            flagged={
                s.labels["reason"]: s.value
                for m in self.flagged.collect()
                for s in m.samples
                if s.name.endswith("_total")
            },
            dead_letters=now(self.dead_letters),
            duplicates=total(self.duplicates),
            redelivered=total(self.redelivered),
            pending=now(self.pending),
            spool_depth=now(self.spool_depth),
            spool_age_s=now(self.spool_age),
        )
