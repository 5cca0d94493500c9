"""`store.sqlite`, the gateway's embedded file: three components, each with
its own tables and schema version, on one connection (one worker thread).

- `devices` (device_state.py): device health, room states, unknown devices.
  Always here, whatever the time-series backend.
- `dead_letters` (dead_letters.py): records a backend refused. Always here.
- `series` (sqlite.py): the time series, rollups and loss audit of the
  embedded backend. With InfluxDB these tables stay empty.

One connection because a series write also updates device health in the same
transaction, and because calls on one connection never race each other.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from mamaroom.storage.dead_letters import DeadLetterStore
from mamaroom.storage.device_state import DeviceStateStore
from mamaroom.storage.sqlite import SqliteSeries
from mamaroom.storage.sqlite_base import SqliteConnection

# A batch of messages from many devices dirties about one page per message
# (rows are clustered by device); with the default 1000 pages nearly every
# commit of a busy gateway also checkpointed, with its fsyncs, on the path to
# the ack. Durability is the commit's (WAL), not the checkpoint's.
CHECKPOINT_PAGES = 10_000


class EmbeddedStore:
    """The components of `store.sqlite`. Open before use, close after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection = SqliteConnection(path, checkpoint_pages=CHECKPOINT_PAGES)
        self.devices = DeviceStateStore(path, connection=self.connection)
        self.dead_letters = DeadLetterStore(path, connection=self.connection)
        # After `devices`: its telemetry rollup reads their list.
        self.series = SqliteSeries(self.devices)

    async def open(self) -> None:
        """Connect, and bring each component to this release's schema."""
        await self.connection.open()
        try:
            for component in (self.devices, self.dead_letters, self.series):
                await component.open()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.connection.close()
            raise

    async def close(self) -> None:
        await self.connection.close()
