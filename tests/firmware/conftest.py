from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.firmware.mpy import build
from tests.firmware.nodes import Node, Server
from tests.support import Mosquitto


@pytest.fixture(scope="session")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The firmware precompiled with mpy-cross, once per test run."""
    return build(tmp_path_factory.mktemp("firmware-build"))


@pytest.fixture
def server(broker: Mosquitto) -> Iterator[Server]:
    s = Server(broker.port)
    yield s
    s.close()


@pytest.fixture
def node_factory(
    firmware: Path, broker: Mosquitto, tmp_path: Path
) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(device: str = "n-test-0101", start: bool = True, **config: Any) -> Node:
        n = Node(tmp_path / device, firmware, device, broker.port, **config)
        made.append(n)
        return n.start() if start else n

    yield make
    for n in made:
        n.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long runs, only in `make soak` (SOAK=1)")
