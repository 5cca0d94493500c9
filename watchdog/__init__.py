"""The watchdog: an independent process that pages on-site staff when the
system itself fails (gateway or server down, not ready, broker unreachable)."""
