"""What every paging channel is: one protocol, used by the server's
escalation and by the watchdog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mamaroom.logs import get_logger

log = get_logger(__name__)

#: A page's outcome, told once, from any thread: (delivered, detail).
Done = Callable[[bool, str], None]
#: A link (or one destination of it) went down or came back: (subject, up,
#: detail). The subject is the channel's name, or `name:destination` for a
#: channel with several destinations (`im:security-desk`): each has its own
#: state, so one dead destination beside a working one does not flap.
LinkChange = Callable[[str, bool, str], None]
#: Web Push: a target (`staff`, an account) → its phones' push subscriptions
#: (the browsers' PushSubscription JSON). Called on the channel's threads.
Subscriptions = Callable[[str], list[dict[str, Any]]]
#: Web Push: a subscription's endpoint its push service says is gone (404/410).
Gone = Callable[[str], None]


@dataclass(frozen=True)
class Wiring:
    """What a channel may need from whoever builds it, beside its settings.
    The defaults are a configuration check's: nothing is told, no phone known."""

    #: Told when a channel, or one destination of it, goes down or back up.
    on_link_change: LinkChange | None = None
    #: Web Push: where the staff phones' subscriptions are (the server's database).
    push_subscriptions: Subscriptions | None = None
    push_gone: Gone | None = None
    #: Web Push: the page a tapped notification opens (the staff console).
    push_link: str = "/staff"


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


class LinkStates:
    """The link state of each destination of a channel (`im:desk`,
    `push:staff`): `note` each delivery's outcome, and `on_link_change` is
    told when one goes down or comes back. From the channel's threads."""

    def __init__(self, channel: str, on_link_change: LinkChange | None) -> None:
        self.channel = channel
        self._on_link_change = on_link_change
        #: Each destination's last outcome (absent: not tried yet).
        self.up: dict[str, bool] = {}

    def note(self, destination: str, *, up: bool, detail: str) -> None:
        if self.up.get(destination) == up:
            return
        self.up[destination] = up
        if self._on_link_change is None:
            return
        try:
            self._on_link_change(f"{self.channel}:{destination}", up, detail)
        except Exception:  # a caller's bug must not stop paging
            log.exception("link-change callback failed", channel=self.channel)
