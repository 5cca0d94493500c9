"""The configured paging channels, by name.

Each channel kind is one module of this package with a `from_settings`
function: it returns the channel if the settings configure one, else None.
Adding a kind (an SMS modem, a phone gateway) is that module, its settings
section in mamaroom/config.py, and a line below; tiers then name its targets
as `kind:target` (docs/configuration.md). An SMS or e-mail service that
apprise supports needs no code at all: it is an IM destination
(`paging.im.destinations`)."""

from __future__ import annotations

from collections.abc import Callable

from mamaroom.config import Settings
from paging import espa, im, webpush
from paging.channel import Channel, Wiring

Factory = Callable[[Settings, Wiring], Channel | None]

#: Every channel kind there is, by the name tiers use.
KINDS: dict[str, Factory] = {
    "espa": espa.from_settings,
    "im": im.from_settings,
    "push": webpush.from_settings,
}


def build_channels(settings: Settings, wiring: Wiring | None = None) -> dict[str, Channel]:
    """The channels `settings` configures, not yet started. Without `wiring`
    (a configuration check) they can say whom they reach, and tell nobody."""
    channels: dict[str, Channel] = {}
    for name, factory in KINDS.items():
        channel = factory(settings, wiring or Wiring())
        if channel is not None:
            channels[name] = channel
    return channels
