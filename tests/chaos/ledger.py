"""The load generator's ledger, read by the test while the load runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mamaroom.contract import CallStatus

#: A message's identity: (device, boot, seq).
Key = tuple[str, int, int]
#: Call statuses that mean "received or later": all of them.
RECEIVED = {s.value for s in CallStatus}


@dataclass
class CallRecord:
    device: str
    started: float
    #: Wall times of the broker's PUBACK for each `press`.
    presses: list[float] = field(default_factory=list)
    #: (wall time, status) of each call_ack the node received.
    acks: list[tuple[float, str]] = field(default_factory=list)

    @property
    def received_at(self) -> float | None:
        return min((t for t, s in self.acks if s in RECEIVED), default=None)

    def in_flight_at(self, t: float) -> bool:
        """Pressed (the broker had it) and not yet acknowledged to the node at `t`."""
        received = self.received_at
        return any(p < t for p in self.presses) and (received is None or received > t)


@dataclass
class Pub:
    t: float
    kind: str
    occupied: bool | None


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""
        self.pubs: dict[Key, Pub] = {}
        self.calls: dict[str, CallRecord] = {}
        #: Per device: (boot, seq, occupied) of its latest acknowledged occupancy.
        self.last_occupancy: dict[str, tuple[int, int, bool]] = {}
        self.events: list[dict[str, Any]] = []  # start, connected, burst, calls_done, stopped

    def refresh(self) -> Ledger:
        """Read what the load generator has written since the last call."""
        if not self.path.exists():
            return self
        with self.path.open(encoding="utf-8") as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset = f.tell()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next read
        for line in lines:
            if line:
                self._add(json.loads(line))
        return self

    def _add(self, e: dict[str, Any]) -> None:
        ev, t = e["ev"], e["t"]
        if ev == "pub":
            key = (e["dev"], e["boot"], e["seq"])
            self.pubs.setdefault(key, Pub(t, e["kind"], e.get("occupied")))
            if e["kind"] == "occupancy":
                last = self.last_occupancy.get(e["dev"])
                if last is None or (e["boot"], e["seq"]) > last[:2]:
                    self.last_occupancy[e["dev"]] = (e["boot"], e["seq"], e["occupied"])
            elif e["kind"] == "call" and e.get("action") == "press":
                self.calls[e["call_id"]].presses.append(t)
        elif ev == "call":
            self.calls[e["call"]] = CallRecord(e["dev"], t)
        elif ev == "ack":
            call = self.calls.get(e["call"])
            if call is not None:
                call.acks.append((t, e["status"]))
        elif ev not in ("conn", "disc"):
            self.events.append(e)

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["ev"] == name), None)

    def in_flight_at(self, t: float) -> list[str]:
        return [cid for cid, c in self.calls.items() if c.in_flight_at(t)]

    def first_received_after(self, t: float) -> float | None:
        return min(
            (r for c in self.calls.values() if (r := c.received_at) is not None and r > t),
            default=None,
        )

    def received_since(self, t: float) -> int:
        return sum(1 for c in self.calls.values() if (r := c.received_at) is not None and r > t)

    def pubs_since(self, t: float) -> int:
        return sum(1 for p in self.pubs.values() if p.t > t)

    def presses_since(self, t: float) -> int:
        return sum(1 for c in self.calls.values() for p in c.presses if p > t)

    def keys(self, kind: str | None = None) -> Iterator[Key]:
        return (k for k, p in self.pubs.items() if kind is None or p.kind == kind)
