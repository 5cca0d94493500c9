"""One configuration model for every mamaroom process.

Sources, strongest first: environment variables `MAMAROOM_<KEY>` (nested keys
joined with `__`, e.g. `MAMAROOM_HTTP__PORT=8080`), then the TOML file named by
`MAMAROOM_CONFIG`, then the defaults below. `docs/configuration.md` lists every
key; `site/mamaroom.example.toml` is a commented example.
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mamaroom.contract import Hours

CONFIG_ENV = "MAMAROOM_CONFIG"
#: MAMAROOM_* variables that are not settings: the config file's name, and
#: those a command or the tests read for themselves.
NOT_SETTINGS = frozenset(
    {CONFIG_ENV, "MAMAROOM_ADMIN_PASSWORD", "MAMAROOM_BROKER_PASSWD_FILE", "MAMAROOM_CHROMIUM"}
)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """Configuration that cannot be used; the message is one line naming the key."""


class _Section(BaseModel):
    # inf and nan are never a duration or a share: `supervision_s=inf` would
    # mean a dead room is never offline.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: The longest any timer may be set to: a day. A longer supervision,
#: escalation step or alert delay means, in practice, never.
DAY_S = 86_400.0


#: Values that are placeholders or well-known defaults, never a site's secret:
#: a process given one refuses to start (an empty `KEY=` line in an env file too).
NOT_SECRETS = frozenset(
    {
        "",
        "...",
        "changeme",
        "change-me",
        "change_me",
        "password",
        "secret",
        "admin",
        "mamaroom",
        "mosquitto",
        "influxdb",
        "test",
    }
)


def _real_secret(value: str | None) -> str | None:
    if value is not None and value.strip().lower() in NOT_SECRETS:
        raise ValueError(
            "a placeholder, not a secret: set the real one (deploy/README.md), or leave the key out"
        )
    return value


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30

    _check_password = field_validator("password")(_real_secret)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError("must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. mqtt://127.0.0.1:1883")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    #: Largest request body, refused (413) while it is read, before parsing
    #: and before authentication. The API's JSON bodies are a few KB.
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    #: Largest rooms CSV for POST /api/admin/rooms/import (190 rooms: ~30 KB).
    max_import_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 2 * 1024 * 1024


class InfluxSettings(_Section):
    """InfluxDB through the API every generation serves: `/write` (line protocol)
    and `/query` (InfluxQL); native on 1.x and 3.x, v1 compatibility on 2.x."""

    url: str = "http://127.0.0.1:8086"
    #: 1.x database; on 2.x the database name mapped to a bucket (DBRP mapping).
    database: Annotated[str, Field(min_length=1)] = "mamaroom"
    #: Retention policy for occupancy and calls (kept). Empty = the database default.
    events_rp: str = ""
    #: Retention policy for raw telemetry (30 days).
    telemetry_rp: str = "telemetry_30d"
    #: On 1.x: create the database and retention policies at start-up.
    create: bool = True
    #: 2.x / 3.x: API token (sent as `Authorization: Token ...`).
    token: str | None = None
    #: 1.x with auth enabled.
    username: str | None = None
    password: str | None = None
    #: Points per write request, and the longest a point waits for a fuller batch.
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    _check_secrets = field_validator("token", "password")(_real_secret)


class StorageSettings(_Section):
    #: `sqlite` (embedded, zero setup) or `influxdb` (with a disk spool in data_dir).
    backend: Literal["sqlite", "influxdb"] = "sqlite"
    #: Raw telemetry is deleted after this many days; occupancy and calls are kept.
    telemetry_retention_days: Annotated[int, Field(ge=1)] = 30
    #: How long the (device, boot, seq) ledger remembers messages for the
    #: InfluxDB backend; redeliveries come within minutes, this allows days.
    dedupe_window_days: Annotated[int, Field(ge=1)] = 7
    influxdb: InfluxSettings = InfluxSettings()


class GatewaySettings(_Section):
    #: Fixed client id: the broker keeps this gateway's session and queue by it.
    #: Every gateway process needs its own.
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "mamaroom-gateway"
    #: Shared-subscription group (`$share/<group>/...`) for running several gateways;
    #: empty = not shared (the embedded demo broker has no shared subscriptions).
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$", max_length=64)] = ""
    #: Messages received but not yet stored and acknowledged; beyond this the
    #: gateway stops reading and the broker holds the backlog.
    max_pending: Annotated[int, Field(ge=10, le=100_000)] = 2000
    #: A room whose node sent nothing for this long is offline (contract: 150 s).
    supervision_s: Annotated[float, Field(gt=0, le=3600)] = 150.0
    #: Most messages written to storage in one transaction.
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    #: Per-device message budget (a token bucket, monotonic time): sustained
    #: messages per second, and the burst allowed at once. Beyond it a node's
    #: messages are dropped and counted (reject reason `rate_limited`). A node
    #: sends about one message a minute; the burst covers the backlog of a
    #: 16-hour gateway outage (~1,300 messages per node) drained at once.
    device_rate_per_s: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 5.0
    device_burst: Annotated[int, Field(ge=1, le=10_000_000)] = 2000
    #: Calls have their own, larger budget: they are tiny, and an emergency
    #: call must never wait behind a node's other traffic.
    call_rate_per_s: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 20.0
    call_burst: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    #: Prometheus metrics of the gateway; 0 turns the endpoint off.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9108
    metrics_host: str = "127.0.0.1"


class ServerSettings(_Section):
    #: Room changes buffered per stream client; one further behind is disconnected
    #: (its browser reconnects and gets a fresh snapshot).
    stream_queue: Annotated[int, Field(ge=10, le=100_000)] = 1000
    #: Fixed MQTT client id with a persistent session: calls and staff-key
    #: resets sent while the server restarts wait at the broker. Every server
    #: process needs its own (several servers share data_dir; see deployment.md).
    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "mamaroom-server"
    #: `all`: one process does everything. For a site that wants the
    #: emergency path out of reach of any web client, two processes on one
    #: data_dir: `calls` takes the nodes' calls, acknowledges them and pages
    #: (its HTTP port on 127.0.0.1 only, for health and metrics); `web` serves
    #: the pages, API and logins, learns of alerts from the calls server over
    #: MQTT, and never pages (deployment.md: "The call path in its own process").
    role: Literal["all", "calls", "web"] = "all"
    #: Open HTTP connections at most (beyond: 503 and closed); 0 = sized from the
    #: process's file-descriptor limit, keeping `fd_reserve` for the call path.
    max_connections: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    #: Open connections per client address (trusted proxies are exempt).
    max_connections_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 128
    #: File descriptors never given to web clients: MQTT, SQLite, serial, IM, logs.
    fd_reserve: Annotated[int, Field(ge=64, le=100_000)] = 256
    #: A request line and headers must arrive within this long (slowloris).
    header_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: A request body that stops arriving for this long is dropped.
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: Reverse proxies whose X-Forwarded-For is believed (addresses or networks,
    #: e.g. "10.0.0.5" or "10.0.0.0/24"); empty = none, the peer is the client.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value


class AuthSettings(_Section):
    """Logins and passwords (docs/deployment.md: "Logins")."""

    #: Logins checked at the same time; more get 503 at once, without hashing.
    max_concurrent_logins: Annotated[int, Field(ge=1, le=1000)] = 8
    #: Threads that hash passwords (argon2id, ~0.2 s of CPU each), off the event loop.
    hash_workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: Failed logins allowed per client address (and per user) before the delay.
    free_attempts: Annotated[int, Field(ge=1, le=1000)] = 5
    #: The delay after the free attempts; it doubles with each further failure.
    backoff_base_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    #: The longest that delay grows.
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    #: Failures are forgotten once none came for this long.
    failure_window_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0
    #: Shortest password an account may be given (without the user's name in it).
    #: (Named so that the shipped-secrets scan, which flags any *PASSWORD* key, passes.)
    min_passphrase_length: Annotated[int, Field(ge=8, le=200)] = 10


class EspaSettings(_Section):
    """ESPA 4.4.4 paging over a serial line (contract: Paging over serial)."""

    #: Serial device, e.g. /dev/ttyUSB0; empty = no ESPA paging.
    port: str = ""
    baud: Annotated[int, Field(ge=300, le=115_200)] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    own_address: Annotated[str, Field(pattern=r"^[0-9]{1,2}$")] = "1"
    pager_system_address: Annotated[str, Field(pattern=r"^[0-9]{1,2}$")] = "2"
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 2.0
    tries: Annotated[int, Field(ge=1, le=10)] = 3
    #: `control` (mamaroom selects the paging system) or `passive` (the paging
    #: system is the control station and polls mamaroom).
    mode: Literal["control", "passive"] = "control"
    #: Passive mode: no poll for this long means the link is down.
    poll_silence_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: While the link is down, a selection is tried this often to see it come back.
    probe_s: Annotated[float, Field(gt=0, le=3600)] = 10.0


class ImSettings(_Section):
    """Instant messages through apprise: a name → an apprise URL, e.g.
    `wecom://...` (企业微信), `dingtalk://...` (钉钉), `mailtos://...`."""

    destinations: dict[str, str] = Field(default_factory=dict)


class PagingSettings(_Section):
    espa: EspaSettings = EspaSettings()
    im: ImSettings = ImSettings()
    #: The server refuses to start when no escalation tier can page anyone
    #: (calls would reach only the console). `true` starts it anyway, for a
    #: demo or a bench: the console then shows every call as "nobody to page".
    allow_no_target: bool = False


class AlertSettings(_Section):
    #: A node offline this long, in its room's opening hours, raises device_offline.
    device_offline_after_s: Annotated[float, Field(gt=0, le=DAY_S)] = 300.0
    #: When at least this share of a building's nodes (and at least
    #: building_outage_min of them) are down, raise one alert for the building.
    building_outage_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    building_outage_min: Annotated[int, Field(ge=2)] = 3
    #: Welfare check: a room occupied with the radar reporting continuous
    #: stillness for this long raises a gentle `welfare` alert (staff knock).
    welfare_after_s: Annotated[float, Field(gt=0, le=DAY_S)] = 3600.0
    #: The welfare check's off switch (some sites prefer none).
    welfare_enabled: bool = True


class TrendsSettings(_Section):
    """The managers' trends (docs/trends.md)."""

    #: Target for a call's raised → acknowledged time.
    call_ack_target_s: Annotated[float, Field(gt=0)] = 60.0
    #: Target for a call's raised → staff in the room time.
    call_arrive_target_s: Annotated[float, Field(gt=0)] = 300.0
    #: A room is over-used at this many times the median utilisation, or more.
    overused_factor: Annotated[float, Field(gt=1)] = 1.5
    #: A room is under-used at this share of the median utilisation, or less.
    underused_factor: Annotated[float, Field(ge=0, lt=1)] = 0.5
    #: Only for telemetry rollups made before uptime was measured from the gaps
    #: between reports (InfluxDB points without `online_ms`): each of their
    #: reports counts as this much time online. Newer rollups use each node's
    #: own interval (docs/trends.md).
    telemetry_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


#: A pager (call) number as ESPA 4.4.4 carries it.
PAGER_NUMBER = r"^[0-9]{1,16}$"
PagerNumber = Annotated[str, Field(pattern=PAGER_NUMBER)]
#: A staff account's name (a Web Push page can name one: `push:<account>`).
ACCOUNT_NAME = r"^[A-Za-z0-9._-]{2,64}$"
#: `channel:target`, e.g. `espa:101`, `im:security-desk` or `push:staff`.
TierTarget = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*:\S+$", max_length=200)]


class EscalationTier(_Section):
    """Who is paged, from how long after the call, until someone acknowledges it."""

    #: Seconds after the call when this tier starts.
    after_s: Annotated[float, Field(ge=0, le=DAY_S)] = 0
    #: Whom this tier pages, each as `channel:target`: `espa:101` (a pager
    #: number), `im:security-desk` (a name from paging.im.destinations), or
    #: any other configured channel's (paging/registry.py).
    targets: list[TierTarget] = Field(default_factory=list)
    #: Shorthand for `espa:<number>` targets (security desk, facility manager, ...).
    pagers: list[PagerNumber] = Field(default_factory=list)
    #: Shorthand for `im:<name>` targets (names from paging.im.destinations).
    im: list[str] = Field(default_factory=list)
    #: Also page whoever is on duty (roster) for the room's building.
    on_duty: bool = False
    #: Page this tier again every so many seconds until acknowledged; 0 = once.
    repeat_s: Annotated[float, Field(ge=0, le=DAY_S)] = 0
    #: Only for rooms in these buildings (Chinese or English name); empty = all.
    buildings: list[str] = Field(default_factory=list)

    def named_targets(self) -> list[tuple[str, str]]:
        """(channel, target) pairs, each once: `targets`, then the shorthands."""
        pairs = [tuple(t.split(":", 1)) for t in self.targets]
        pairs += [("espa", p) for p in self.pagers] + [("im", n) for n in self.im]
        return list(dict.fromkeys((c, t) for c, t in pairs))


class DutyShift(_Section):
    """One person on the duty roster."""

    name: Annotated[str, Field(min_length=1)]
    pager: PagerNumber
    #: Buildings this person covers; empty = all.
    buildings: list[str] = Field(default_factory=list)
    #: Their shift, `HH:MM-HH:MM` in site time (may cross midnight); empty = always.
    hours: Hours = ""


class EscalationSettings(_Section):
    #: At least one tier: an empty list would page nobody, ever.
    tiers: Annotated[list[EscalationTier], Field(min_length=1)] = Field(
        default_factory=lambda: [EscalationTier(after_s=0, on_duty=True, repeat_s=60)]
    )
    roster: list[DutyShift] = Field(default_factory=list)
    #: How often escalation timers are checked.
    tick_s: Annotated[float, Field(gt=0, le=10)] = 1.0


class WatchdogSettings(_Section):
    """The dead-man's switch (`mamaroom watchdog`): pages the security desk
    when a gateway's heartbeat, the server or the broker stops."""

    #: How often the server and the broker are checked.
    check_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    #: Client ids of the gateways that must be alive; empty = [gateway.client_id].
    gateways: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list)
    #: A gateway publishes its stats every 10 s; this long without them, it is down.
    gateway_silence_s: Annotated[float, Field(gt=10, le=3600)] = 60.0
    #: The server's base URL; empty = http://http.host:http.port.
    server_url: str = ""
    #: The server's /healthz failing this long: it is down.
    server_silence_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: No round trip through the broker this long: it is down.
    broker_silence_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: Pager numbers of the security desk, over ESPA (needs `espa_port`).
    pagers: list[PagerNumber] = Field(default_factory=list)
    #: IM destinations (names from paging.im.destinations) of the security desk.
    im: list[str] = Field(default_factory=list)
    #: The watchdog's own serial line to the paging system (the server holds
    #: paging.espa.port); line settings as paging.espa. Empty = no ESPA.
    espa_port: str = ""
    #: Page again every so long while something is still down; 0 = once.
    repeat_s: Annotated[float, Field(ge=0, le=DAY_S)] = 600.0
    #: Its MQTT client id (and mr/v1/watchdog/{client_id}/ping).
    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "mamaroom-watchdog"


class PagesSettings(_Section):
    """The pages: mothers' room list, staff console, QR codes, Web Push."""

    #: Buildings' positions and walking times (site/site.toml); missing = no walking times.
    site_file: Path = PROJECT_ROOT / "site" / "site.toml"
    #: The address phones use to reach the pages (QR codes, push links):
    #: the public surface; empty = http://http.host:http.port.
    public_url: str = ""
    #: The staff console's address, on the intranet (the staff listener):
    #: emergency-call pushes link to it. Empty = public_url.
    staff_url: str = ""
    #: A room this many walking minutes away or less counts as "near me".
    near_minutes: Annotated[float, Field(gt=0, le=60)] = 5.0
    #: Predicted waits learn session lengths from this many past days.
    wait_history_days: Annotated[int, Field(ge=1, le=365)] = 28
    #: Web Push (VAPID) keys from `mamaroom webpush keys`; none = no Web Push.
    vapid_public_key: str | None = None
    vapid_private_key: str | None = None
    #: Who runs this server, for push services (`mailto:` or `https:`).
    vapid_subject: str = "mailto:mamaroom@localhost"
    #: Push services a subscription may name (a host and its subdomains, over
    #: https; `http://host` allows plain http to that host). Anything else is
    #: refused, so nobody can make the server post to an address of their choosing.
    push_hosts: list[str] = Field(
        default_factory=lambda: [
            "fcm.googleapis.com",
            "push.services.mozilla.com",
            "push.apple.com",
            "notify.windows.com",
        ]
    )


#: What a WeChat template keyword may be filled with (wechat.template_data).
WECHAT_FIELDS = ("room", "place", "status", "time")


class WechatSettings(_Section):
    """The park's WeChat service account (服务号) as the mothers' entry: the
    page learns a mother's openid through OAuth (`snsapi_base`), and "a room
    near you is free" goes to her as a one-time subscription notification
    (订阅通知, `bizsend`). docs/wechat.md."""

    #: The service account's AppID; empty = no WeChat (the pages keep Web Push).
    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$", max_length=64)] = ""
    #: Its AppSecret (secret): needed for access tokens and OAuth.
    secret: str | None = None
    #: The subscription-notification template (订阅通知 → 我的模板) the mother agrees to.
    template_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$", max_length=128)] = ""
    #: The template's keywords and what fills them: `{room}` (the room's name),
    #: `{place}` (building and floor), `{status}` (空闲), `{time}` (HH:MM).
    template_data: dict[str, str] = Field(
        default_factory=lambda: {"thing1": "{room}", "phrase2": "{status}", "time3": "{time}"}
    )
    #: WeChat's API (tokens, OAuth code exchange, JS-SDK ticket, bizsend).
    api_base_url: str = "https://api.weixin.qq.com"
    #: WeChat's OAuth page (`/connect/oauth2/authorize`).
    oauth_base_url: str = "https://open.weixin.qq.com"
    #: The JS-SDK the page loads inside WeChat for the subscribe button (开放标签).
    jssdk_url: str = "https://res.wx.qq.com/open/js/jweixin-1.6.0.js"
    #: One call to WeChat's API gives up after this long.
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    #: Tries of one send on a network error or "system busy" (-1).
    tries: Annotated[int, Field(ge=1, le=10)] = 3
    #: After "minute quota reached" (45011) a send is tried again this much later.
    quota_retry_s: Annotated[float, Field(gt=0, le=3600)] = 60.0

    #: The token of the account's server URL (服务器配置 → 令牌, plaintext or
    #: compatible mode): WeChat then pushes the mothers' subscribe choices to
    #: /wechat/events, signed with it. Empty = those pushes are not taken.
    token: Annotated[str | None, Field(max_length=32)] = None
    _check_secret = field_validator("secret")(_real_secret)
    _check_token = field_validator("token")(_real_secret)

    @field_validator("api_base_url", "oauth_base_url", "jssdk_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("template_data")
    @classmethod
    def _check_template(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pattern in value.items():
            if not re.fullmatch(r"[a-z_]+[0-9]+", key):
                raise ValueError(f"{key!r} is not a template keyword (e.g. thing1, time3)")
            try:
                pattern.format_map(dict.fromkeys(WECHAT_FIELDS, ""))
            except (KeyError, ValueError, IndexError) as exc:
                raise ValueError(
                    f"{key}: {pattern!r}: only {{room}}, {{place}}, {{status}} "
                    f"and {{time}} are known ({exc})"
                ) from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> WechatSettings:
        if self.app_id and not (self.secret and self.template_id):
            raise ValueError(
                "wechat.app_id is set: wechat.secret and wechat.template_id "
                "are needed too (docs/wechat.md)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.app_id)


class RetentionSettings(_Section):
    """How long the server keeps records about people; applied by the server
    itself (docs/privacy.md). Raw telemetry has its own:
    storage.telemetry_retention_days."""

    #: Closed alerts (resolved or cancelled) and their timelines (who
    #: acknowledged, who was paged, when) are deleted this many days after
    #: they closed. Open ones are kept. Trends of calls reach back this far.
    alert_days: Annotated[int, Field(ge=1, le=36_500)] = 365
    #: How often the server applies retention: deletes reminders that
    #: lapsed (2 h after they were set) and alerts past alert_days.
    interval_s: Annotated[float, Field(gt=0, le=DAY_S)] = 300.0


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: `console` for people, `json` for log collectors.
    format: Literal["console", "json"] = "console"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAMAROOM_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    gateway: GatewaySettings = GatewaySettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    log: LogSettings = LogSettings()
    storage: StorageSettings = StorageSettings()
    paging: PagingSettings = PagingSettings()
    alerts: AlertSettings = AlertSettings()
    escalation: EscalationSettings = EscalationSettings()
    trends: TrendsSettings = TrendsSettings()
    watchdog: WatchdogSettings = WatchdogSettings()
    pages: PagesSettings = PagesSettings()
    wechat: WechatSettings = WechatSettings()
    retention: RetentionSettings = RetentionSettings()
    #: Where the embedded databases live (created if missing).
    data_dir: Path = Path("var")
    #: Seeds the registry on first start; the server's database is the truth after that.
    rooms_csv: Path = PROJECT_ROOT / "site" / "rooms.csv"
    #: The site's time zone, for opening hours and trends.
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @property
    def store_path(self) -> Path:
        """The embedded time-series store shared by gateway (writes) and server (reads)."""
        return self.data_dir / "store.sqlite"

    @property
    def spool_path(self) -> Path:
        """The InfluxDB backend's spool and dedupe ledger (shared by the gateways
        of one machine, so a message redelivered to another is still known)."""
        return self.data_dir / "influx-spool.sqlite"

    @property
    def call_journal_path(self) -> Path:
        """Calls the database refused (a full disk), until they are committed;
        one per server process."""
        return self.data_dir / f"call-journal-{self.server.client_id}.bin"

    @property
    def server_db_path(self) -> Path:
        """The server's own database: the registry (and later alerts and users)."""
        return self.data_dir / "server.sqlite"


def _check_env_names() -> None:
    """A misspelt MAMAROOM_* variable is an error, not silently ignored
    (pydantic-settings skips names that match no field)."""
    for name in os.environ:
        if not name.upper().startswith("MAMAROOM_") or name.upper() in NOT_SETTINGS:
            continue
        model: type[BaseModel] | None = Settings
        for part in name[len("MAMAROOM_") :].lower().split("__"):
            if model is None:  # inside a mapping (e.g. paging.im.destinations)
                break
            field = model.model_fields.get(part)
            if field is None:
                raise ConfigError(
                    f"config error: {name}: no such setting (see docs/configuration.md)"
                )
            ann = field.annotation
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def load_settings(**overrides: object) -> Settings:
    """Read and validate the configuration, or raise ConfigError with one clear line."""
    path = os.environ.get(CONFIG_ENV)
    if path and not Path(path).is_file():
        raise ConfigError(f"config error: {CONFIG_ENV}={path}: no such file")
    _check_env_names()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        env = "MAMAROOM_" + "__".join(str(p) for p in err["loc"]).upper()
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"config error: {key} (env {env}): {err['msg']}; got {err.get('input')!r}{more}"
        ) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"config error: {CONFIG_ENV}={path}: {exc}") from None
