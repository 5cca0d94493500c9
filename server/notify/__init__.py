"""Paging channels, one module each. Each takes a new alert and returns at
once; a failing channel never blocks or delays the others, and one that is
down raises its own `paging_link` alert."""
