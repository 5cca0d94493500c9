"""Fault injection runs for minutes: only when asked for (`make chaos`, or
`pytest -m chaos`); a plain `pytest` skips it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="fault injection takes minutes: run `make chaos`")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)
