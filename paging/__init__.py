"""Paging channels (ESPA 4.4.4 over a serial line, IM webhooks via apprise):
used by the server to page staff and by the watchdog to page when the server
is down. Above the core, below the server and the watchdog."""
