"""The configured paging channels, by name.

Each channel kind is one module of this package with a `from_settings`
function: it returns the channel if its section of `[paging]` configures
one, else None. Adding a kind (an SMS modem, a phone gateway) is that
module, its settings section in mamaroom/config.py, and a line below;
tiers then name its targets as `kind:target` (docs/configuration.md).
An SMS or e-mail service that apprise supports needs no code at all: it is
an IM destination (`paging.im.destinations`)."""

from __future__ import annotations

from collections.abc import Callable

from mamaroom.config import PagingSettings
from paging import espa, im
from paging.channel import Channel, LinkChange

Factory = Callable[[PagingSettings, LinkChange | None], Channel | None]

#: Every channel kind there is, by the name tiers use.
KINDS: dict[str, Factory] = {
    "espa": espa.from_settings,
    "im": im.from_settings,
}


def build_channels(
    paging: PagingSettings, on_link_change: LinkChange | None = None
) -> dict[str, Channel]:
    """The channels `paging` configures, not yet started."""
    channels: dict[str, Channel] = {}
    for name, factory in KINDS.items():
        channel = factory(paging, on_link_change)
        if channel is not None:
            channels[name] = channel
    return channels
