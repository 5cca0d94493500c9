"""Instant-message paging through apprise: WeCom (企业微信), DingTalk (钉钉),
e-mail and SMS gateways, one URL per destination (apprise's URL syntax). In
mainland China push through Google's services does not arrive; WeCom and
DingTalk do.

apprise is blocking, so pages go out on a small thread pool: a slow or dead
IM service never delays the other channels, and each destination's result
comes back through `done`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import apprise

from mamaroom.config import Settings
from mamaroom.logs import get_logger
from paging.channel import Done, LinkChange, LinkStates, Wiring

log = get_logger(__name__)


def from_settings(settings: Settings, wiring: Wiring) -> ImChannel | None:
    """The IM channel `paging.im` configures (None without destinations)."""
    if not settings.paging.im.destinations:
        return None
    return ImChannel(settings.paging.im.destinations, on_link_change=wiring.on_link_change)


class ImChannel:
    name = "im"
    ascii_only = False

    def __init__(
        self,
        destinations: dict[str, str],
        *,
        workers: int = 4,
        on_link_change: LinkChange | None = None,
    ) -> None:
        """`destinations`: a name (used in escalation tiers) → an apprise URL.
        `on_link_change("im:<destination>", up, detail)` is told when delivery
        to one destination starts failing or works again: each destination
        has its own state, so one dead URL beside a working one does not flap."""
        self._urls = dict(destinations)
        self.links = LinkStates(self.name, on_link_change)
        for name, url in self._urls.items():
            if apprise.Apprise.instantiate(url) is None:
                raise ValueError(f"paging.im.destinations.{name}: apprise cannot use {url!r}")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="im")

    def reaches(self, target: str) -> bool:
        return target in self._urls

    def start(self) -> None:
        """Nothing to start: a worker thread is made per page as needed."""

    def send(self, target: str, text: str, done: Done | None = None) -> None:
        url = self._urls.get(target)
        if url is None:
            log.error("unknown IM destination", target=target)
            if done:
                done(False, f"no IM destination named {target!r}")  # noqa: FBT003 (a Done callback)
            return
        self._pool.submit(self._deliver, target, url, text, done)

    def _deliver(self, target: str, url: str, text: str, done: Done | None) -> None:
        sender = apprise.Apprise()
        sender.add(url)
        try:
            ok = bool(sender.notify(title="mamaroom", body=text))
        except Exception as exc:  # an apprise plugin failing must not kill the worker
            ok, text = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            log.error("IM page failed", target=target)
        self.links.note(
            target, up=ok, detail="delivered" if ok else f"could not deliver to {target}"
        )
        if done:
            try:
                done(ok, "delivered" if ok else "not delivered")
            except Exception:
                log.exception("IM page outcome callback failed")

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
