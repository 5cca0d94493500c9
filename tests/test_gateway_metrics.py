"""The stats a gateway publishes for the server's /metrics."""

from __future__ import annotations

from gateway.metrics import GatewayMetrics


def test_the_summary_reads_gauges_fed_by_a_function() -> None:
    # `pending` is fed by set_function (the ingest's unacknowledged count):
    # the summary read its stored value, always 0, so the server's
    # mamaroom_gateway_pending never moved.
    metrics = GatewayMetrics()
    metrics.pending.set_function(lambda: 42)
    metrics.spool_depth.set(7)
    stats = metrics.summary()
    assert stats.pending == 42
    assert stats.spool_depth == 7
