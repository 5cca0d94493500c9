"""What the API routes share: settings, databases and services of one server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from mamaroom.config import Settings
from mamaroom.storage.device_state import DeviceStateStore
from server.db import ServerDb
from server.mqtt_link import ServerMqtt
from server.services.accounts import AccountsDb, LoginLimiter
from server.services.alerts import AlertService
from server.services.escalation import Escalator
from server.services.fanout import Fanout
from server.services.registry import RegistryService
from server.services.rooms import LiveRooms
from server.services.roster import Roster
from server.services.site import SiteService
from server.services.trends import TrendsService
from server.services.waits import WaitPredictor
from server.services.webpush import WebPush
from server.services.wechat import WechatService


@dataclass(frozen=True, kw_only=True)
class ServerContext:
    """Every service of one server, built by server/composition.py."""

    settings: Settings
    db: ServerDb
    #: Device health and unknown devices (store.sqlite, the gateway's).
    devices: DeviceStateStore
    #: The loss audit's file (open_stores): read per request, never kept open.
    audit_path: Path
    registry: RegistryService
    rooms: LiveRooms
    mqtt: ServerMqtt
    alerts: AlertService
    accounts: AccountsDb
    login_limiter: LoginLimiter
    fanout: Fanout
    escalator: Escalator
    roster: Roster
    site: SiteService
    waits: WaitPredictor
    push: WebPush
    wechat: WechatService
    trends: TrendsService


async def _context(request: Request) -> ServerContext:
    # async although it awaits nothing: FastAPI runs a plain `def` dependency
    # in its thread pool, a thread hand-off on every request that uses Ctx.
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(_context)]
