"""No side channel: to the public, a room with an emergency call is exactly
an ordinary occupied room. A script records the public stream while a door
is locked and opened, then while a call is pressed and reset in the same
room, and compares the two recordings.

Measured on main before: during a call the room showed `occupied` with the
unchanged `since` of its free state, so anyone watching /api/stream could
tell a call was happening (health information under PIPL)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import httpx

from tests.support import Device, DeviceFactory, Services, sse_events, wait_for

ROOM = "T1-0101"


class PublicStream(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            for event, data in sse_events(f"{self.url}/api/stream", timeout=None):
                if event == "snapshot":
                    self.ready.set()
                elif event == "room" and data["id"] == ROOM:
                    self.events.append((time.time(), event, data))
        except httpx.HTTPError:
            pass  # the server stopped at the end of the test

    def since(self, after: float) -> list[tuple[str, float]]:
        """(state, since) of each change of the room seen after `after`."""
        return [
            (d["state"], datetime.fromisoformat(d["since"]).timestamp())
            for t, _, d in self.events
            if t >= after
        ]


def test_a_call_looks_like_a_door_to_the_public(
    services: Services, device_factory: DeviceFactory
) -> None:
    dev: Device = device_factory("dev-a")
    stream = PublicStream(services.base_url)
    stream.start()
    assert stream.ready.wait(30)
    dev.occupancy(False)
    services.wait_room_state(ROOM, "free")

    def record(begin: Any, end: Any) -> list[tuple[str, bool]]:
        """The public's view of one episode: each state, and whether its
        `since` is the moment of that change (not an earlier time)."""
        t0 = time.time()
        begin()
        wait_for(
            lambda: [s for s, _ in stream.since(t0)] == ["occupied"],
            what="occupied on the public stream",
        )
        t1 = time.time()
        end()
        wait_for(
            lambda: [s for s, _ in stream.since(t0)] == ["occupied", "free"],
            what="free again on the public stream",
        )
        seen = stream.since(t0)
        # `since` within a second of the change (device clocks here are this clock).
        return [(seen[0][0], seen[0][1] >= t0 - 1), (seen[1][0], seen[1][1] >= t1 - 1)]

    door = record(lambda: dev.occupancy(True), lambda: dev.occupancy(False))
    time.sleep(1.5)  # so a `since` kept from before the call would be visibly older
    call = record(
        lambda: dev.call("press", "side-1"),
        lambda: (dev.call("presence", "side-1"), dev.call("reset", "side-1")),
    )
    assert door == [("occupied", True), ("free", True)]
    assert call == door
    # And nothing else in the public data differs between the two.
    keys = {tuple(sorted(d)) for _, _, d in stream.events}
    assert len(keys) == 1
