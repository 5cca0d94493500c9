"""The gateway's Prometheus metrics, on its own port (config `gateway.metrics_port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from mamaroom.contract import Kind, RejectReason


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "mamaroom_gateway_received", "Messages received from devices, by kind",
            ["kind"], registry=self.registry)
        self.stored = Counter(
            "mamaroom_gateway_stored", "New messages written to storage, by kind",
            ["kind"], registry=self.registry)
        self.rejected = Counter(
            "mamaroom_gateway_rejected", "Messages refused, by reason",
            ["reason"], registry=self.registry)
        self.duplicates = Counter(
            "mamaroom_gateway_duplicates", "Repeated (device, boot, seq) ignored",
            registry=self.registry)
        self.room_states = Counter(
            "mamaroom_gateway_room_state_published", "Room state changes published",
            registry=self.registry)
        self.storage_errors = Counter(
            "mamaroom_gateway_storage_errors", "Failed storage writes (retried)",
            registry=self.registry)
        self.pending = Gauge(
            "mamaroom_gateway_pending", "Messages received, not yet handled and acknowledged",
            registry=self.registry)
        # Every series exists from the start, so a dashboard shows 0, not "no data".
        for reason in RejectReason:
            self.rejected.labels(reason.value)
        for kind in Kind:
            if kind is not Kind.CMD:  # commands go to devices, not to the gateway
                self.received.labels(kind.value)
