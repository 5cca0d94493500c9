"""Web Push to staff phones, as a paging channel.

Tiers name `push:staff` (every staff phone that subscribed on the console)
or `push:<account>` (that account's phones). The phones subscribe themselves
from the staff console; the server's database keeps their subscriptions, and
whoever builds the channels says how to read them (`Wiring.push_subscriptions`).

A page is delivered when a push service accepts it for at least one phone.
Whether the phone is on and shows it is beyond what the server can know, so
Web Push belongs in a tier beside a pager or IM, not alone. pywebpush is
blocking: pushes go out on the channel's own threads, as IM pages do.

`push_one` is the one place a push is sent: the mothers' "tell me when a room
is free" (server/services/webpush.py) uses it too.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pywebpush import WebPushException, webpush

from mamaroom.config import ACCOUNT_NAME, Settings
from mamaroom.logs import get_logger
from paging.channel import Done, Gone, LinkChange, LinkStates, Subscriptions, Wiring

log = get_logger(__name__)

#: The target for every subscribed staff phone.
STAFF = "staff"
#: How long a push service keeps a page for a phone that is off.
PAGE_TTL_S = 3600


class Outcome(StrEnum):
    SENT = "sent"
    #: The push service says the subscription is over (404/410): delete it.
    GONE = "gone"
    #: Refused by the push service, or it could not be reached.
    FAILED = "failed"
    #: The endpoint is not at a configured push service: never posted to.
    NOT_ALLOWED = "not allowed"


@dataclass(frozen=True)
class Vapid:
    """Who signs the pushes (VAPID, RFC 8292) and where they may go."""

    private_key: str
    subject: str
    push_hosts: list[str]


def push_host_allowed(endpoint: str, hosts: list[str]) -> bool:
    """Is `endpoint` at one of the configured push services (or a subdomain)?"""
    url = urlsplit(endpoint)
    host = (url.hostname or "").lower()
    for entry in hosts:
        scheme, _, name = entry.rpartition("://")
        name = name.lower()
        if url.scheme == (scheme or "https") and (host == name or host.endswith("." + name)):
            return True
    return False


def push_one(sub: dict[str, Any], message: dict[str, Any], vapid: Vapid, ttl: int) -> Outcome:
    """One push (blocking): encrypted for the phone, signed, posted."""
    if not push_host_allowed(str(sub.get("endpoint", "")), vapid.push_hosts):
        log.warning("push endpoint not at a configured push service; not sent")
        return Outcome.NOT_ALLOWED
    try:
        webpush(
            sub,
            json.dumps(message, ensure_ascii=False),
            vapid.private_key,
            {"sub": vapid.subject},
            ttl=ttl,
            timeout=10,
        )
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (404, 410):
            log.info("push subscription gone", status=status)
            return Outcome.GONE
        log.warning("push failed", status=status, error=str(exc)[:200])
        return Outcome.FAILED
    except OSError as exc:
        log.warning("push service unreachable", error=str(exc)[:200])
        return Outcome.FAILED
    return Outcome.SENT


def from_settings(settings: Settings, wiring: Wiring) -> PushChannel | None:
    """The Web Push channel, when `pages.vapid_*` keys are set (None otherwise)."""
    pages = settings.pages
    if not (pages.vapid_public_key and pages.vapid_private_key):
        return None
    return PushChannel(
        Vapid(pages.vapid_private_key, pages.vapid_subject, pages.push_hosts),
        wiring.push_subscriptions or (lambda _target: []),
        link=wiring.push_link,
        gone=wiring.push_gone,
        on_link_change=wiring.on_link_change,
    )


def page_message(text: str, link: str) -> dict[str, Any]:
    """What the phone shows (dashboard/sw.js): the text's first line as the
    title. The tag is the text's: a repeated page of the same call renotifies
    instead of stacking up."""
    title, _, body = text.partition("\n")
    tag = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {
        "title": title,
        "body": body,
        "url": link,
        "tag": f"page-{tag}",
        "requireInteraction": True,
    }


class PushChannel:
    name = "push"
    ascii_only = False

    def __init__(
        self,
        vapid: Vapid,
        subscriptions: Subscriptions,
        *,
        link: str,
        gone: Gone | None = None,
        on_link_change: LinkChange | None = None,
        workers: int = 4,
    ) -> None:
        self._vapid = vapid
        self._subscriptions = subscriptions
        self._link = link
        self._gone = gone
        self.links = LinkStates(self.name, on_link_change)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push")

    def reaches(self, target: str) -> bool:
        """`staff`, or an account's name (whether its phones subscribed is
        known only when a page goes out)."""
        return target == STAFF or re.fullmatch(ACCOUNT_NAME, target) is not None

    def start(self) -> None:
        """Nothing to start: a worker thread is made per page as needed."""

    def send(self, target: str, text: str, done: Done | None = None) -> None:
        self._pool.submit(self._deliver, target, text, done)

    def _deliver(self, target: str, text: str, done: Done | None) -> None:
        try:
            ok, detail = self._push_all(target, page_message(text, self._link))
        except Exception as exc:  # a bad subscription source must not kill the worker
            log.exception("Web Push page failed", target=target)
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if done:
            try:
                done(ok, detail)
            except Exception:
                log.exception("Web Push page outcome callback failed")

    def _push_all(self, target: str, message: dict[str, Any]) -> tuple[bool, str]:
        subs = self._subscriptions(target)
        if not subs:
            log.warning("Web Push page: no phone subscribed", target=target)
            return False, f"no phone of {target} subscribed to Web Push"
        outcomes = [push_one(s["sub"], message, self._vapid, PAGE_TTL_S) for s in subs]
        for s, outcome in zip(subs, outcomes, strict=True):
            if outcome is Outcome.GONE and self._gone is not None:
                self._gone(s["endpoint"])
        sent = outcomes.count(Outcome.SENT)
        if Outcome.SENT in outcomes or Outcome.FAILED in outcomes:
            # Gone phones say nothing about the push services: only these do.
            self.links.note(
                target,
                up=sent > 0,
                detail="delivered" if sent else f"no push service took the page for {target}",
            )
        if sent:
            return True, f"delivered to {sent} of {len(subs)} phones"
        log.error("Web Push page reached no phone", target=target, phones=len(subs))
        return False, f"no phone of {target} took the push ({len(subs)} tried)"

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
