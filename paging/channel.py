"""What every paging channel is: one protocol, used by the server's
escalation and by the watchdog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: A page's outcome, told once, from any thread: (delivered, detail).
Done = Callable[[bool, str], None]
#: A link (or one destination of it) went down or came back: (subject, up,
#: detail). The subject is the channel's name, or `name:destination` for a
#: channel with several destinations (`im:security-desk`): each has its own
#: state, so one dead destination beside a working one does not flap.
LinkChange = Callable[[str, bool, str], None]


class Channel(Protocol):
    """A way to reach a person: a pager over ESPA, an IM destination, …

    `send` queues the page and returns at once (a channel's I/O is blocking
    or slow: it runs on the channel's own threads, never on the caller's
    event loop); `done` is called later with the outcome."""

    #: The name tiers use in their targets (`espa:101`, `im:security-desk`).
    name: str
    #: The text must be 7-bit ASCII (pagers); otherwise Unicode (Chinese first).
    ascii_only: bool

    def reaches(self, target: str) -> bool:
        """Can this channel page `target` at all (a known destination, a valid
        pager number)? Checked at start-up, so a typo is found before a call."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def send(self, target: str, text: str, done: Done | None = None) -> None: ...
