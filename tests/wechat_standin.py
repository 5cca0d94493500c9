"""A stand-in for WeChat (no internet here): a real HTTP server on a free
port that implements the endpoints mamaroom uses, as WeChat's documentation
describes them, with their error codes (docs/wechat.md lists the sources):

- `POST /cgi-bin/stable_token`: the access token, normal and force-refresh
  modes; a wrong secret is 40125;
- `GET /connect/oauth2/authorize` (WeChat's page, here answered at once as
  `snsapi_base` does): 302 to `redirect_uri?code=&state=`; a redirect_uri
  outside the configured OAuth domain is WeChat's error 10003;
- `GET /sns/oauth2/access_token`: code → openid, each code once (40029);
- `GET /cgi-bin/ticket/getticket?type=jsapi`: the JS-SDK ticket;
- `POST /cgi-bin/message/subscribe/bizsend`: a subscription notification.
  An access token that is unknown is 40001, one that expired 42001; a wrong
  template 40037; an openid that never came through OAuth 40003; no
  agreement left (one-time: one accept, one message) 43101; the daily
  quota 45009, the minute quota 45011; "system busy" -1 when told to;
- `GET /open/js/jweixin-1.6.0.js`: a stand-in JS-SDK for the browser tests:
  `wx.config/ready/error` and the `<wx-open-subscribe>` open tag, whose tap
  calls `window.__wxStandinSubscribe(template)` (a Playwright binding, the
  way WeChat's client would tell WeChat's server) and fires `success`.

Tests steer it through its attributes and methods (`user`, `accept`,
`expire_token`, `busy`, `minute_limited`, `daily_quota_left`) and read what
it saw (`calls`, `sent`, `attempts`)."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.support import free_port

APP_ID = "wx0123456789abcdef"
SECRET = "standin-app-secret-0123456789"
TEMPLATE_ID = "Tpl-RoomFree_standin0123456789"
#: The account's server URL token (服务器配置 → 令牌): its pushes are signed with it.
EVENT_TOKEN = "standinEventToken42"


@dataclass
class Call:
    """One API request and the error code it was answered with (0 = ok)."""

    method: str
    path: str
    errcode: int


JSSDK = r"""
// Stand-in WeChat JS-SDK (tests/wechat_standin.py): wx.config and the
// <wx-open-subscribe> open tag as the page uses them.
(function () {
  var readyFns = [], errorFns = [], configured = false;
  window.__wxStandin = { config: null, taps: 0 };
  window.wx = {
    config: function (c) {
      window.__wxStandin.config = c;
      configured = true;
      setTimeout(function () { readyFns.forEach(function (f) { f(); }); }, 0);
    },
    ready: function (f) { if (configured) setTimeout(f, 0); else readyFns.push(f); },
    error: function (f) { errorFns.push(f); },
  };
  class OpenSubscribe extends HTMLElement {
    connectedCallback() {
      if (this.shadowRoot) return;
      var root = this.attachShadow({ mode: "open" });
      // WeChat draws the tag itself; here its template's HTML stands in, without
      // the slot="style" part (the page's CSP allows no inline styles).
      var tpl = this.querySelector('script[type="text/wxtag-template"]:not([slot])');
      root.innerHTML = tpl ? tpl.textContent : "";
      var self = this;
      this.addEventListener("click", function () {
        window.__wxStandin.taps += 1;
        var template = self.getAttribute("template") || "";
        var answer = window.__wxStandinSubscribe ? window.__wxStandinSubscribe(template)
                                                  : Promise.resolve("accept");
        Promise.resolve(answer).then(function (status) {
          var details = {};
          details[template] = JSON.stringify({ status: status });
          self.dispatchEvent(new CustomEvent("success", { detail: {
            errMsg: "subscribe:ok", subscribeDetails: JSON.stringify(details) } }));
        });
      });
    }
  }
  if (!customElements.get("wx-open-subscribe")) {
    customElements.define("wx-open-subscribe", OpenSubscribe);
  }
})();
"""


class WechatStandin:
    def __init__(self, *, oauth_domain: str = "127.0.0.1") -> None:
        self.oauth_domain = oauth_domain
        self.lock = threading.Lock()
        #: The WeChat user at the phone now: OAuth codes are hers.
        self.user = "o-mother-" + secrets.token_hex(4)
        self.token: str | None = None
        self.expired: set[str] = set()
        self.ticket = "standin-ticket-" + secrets.token_hex(8)
        self.codes: dict[str, str] = {}
        self.known_users: set[str] = set()
        #: One-time agreements left per (openid, template).
        self.credits: Counter[tuple[str, str]] = Counter()
        #: Answers to inject into the next bizsend calls.
        self.busy = 0
        self.minute_limited = 0
        self.daily_quota_left: int | None = None
        #: What it saw.
        self.calls: list[Call] = []
        self.sent: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.tokens_issued = 0
        self.force_refreshes = 0
        self.wx_configs: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._handle(self, "GET")

            def do_POST(self) -> None:
                outer._handle(self, "POST")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do ----------------------------------------------------
    def env(self, **more: str) -> dict[str, str]:
        """The server's settings pointing at this stand-in."""
        return {
            "MAMAROOM_WECHAT__APP_ID": APP_ID,
            "MAMAROOM_WECHAT__SECRET": SECRET,
            "MAMAROOM_WECHAT__TEMPLATE_ID": TEMPLATE_ID,
            "MAMAROOM_WECHAT__API_BASE_URL": self.url,
            "MAMAROOM_WECHAT__OAUTH_BASE_URL": self.url,
            "MAMAROOM_WECHAT__JSSDK_URL": f"{self.url}/open/js/jweixin-1.6.0.js",
            "MAMAROOM_WECHAT__TOKEN": EVENT_TOKEN,
            **more,
        }

    @staticmethod
    def push(
        server_url: str,
        openid: str,
        event: str,
        status: str,
        *,
        template: str = TEMPLATE_ID,
        token: str = EVENT_TOKEN,
    ) -> httpx.Response:
        """WeChat pushing a subscription event to the account's server URL,
        signed and shaped as its documentation shows (订阅通知事件推送)."""
        element = {
            "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
            "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
            "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
        }[event]
        result = (
            f"<ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[{status}]]></ErrorStatus>"
            if event == "subscribe_msg_sent_event"
            else f"<SubscribeStatusString><![CDATA[{status}]]></SubscribeStatusString>"
            "<PopupScene>1</PopupScene>"
        )
        body = (
            "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            "<CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event><{element}><List>"
            f"<TemplateId><![CDATA[{template}]]></TemplateId>{result}"
            f"</List></{element}></xml>"
        )
        timestamp, nonce = "1610969440", secrets.token_hex(8)
        signature = hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()
        return httpx.post(
            f"{server_url}/wechat/events",
            params={"signature": signature, "timestamp": timestamp, "nonce": nonce},
            content=body.encode(),
            headers={"Content-Type": "text/xml"},
            timeout=10,
        )

    def accept(self, openid: str, template: str = TEMPLATE_ID) -> None:
        """She tapped "allow" in the subscribe popup: one message may go to her."""
        with self.lock:
            self.credits[(openid, template)] += 1

    def expire_token(self) -> None:
        """The platform ends the current access token (42001 from now on);
        stable_token then hands out a new one."""
        with self.lock:
            if self.token:
                self.expired.add(self.token)
                self.token = None

    def sent_to(self, openid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.sent if m["touser"] == openid]

    def codes_of(self, path: str) -> list[int]:
        with self.lock:
            return [c.errcode for c in self.calls if c.path == path]

    def signature_ok(self, config: dict[str, Any], url: str) -> bool:
        """Is wx.config's signature the one WeChat computes for `url`?"""
        plain = (
            f"jsapi_ticket={self.ticket}&noncestr={config['nonceStr']}"
            f"&timestamp={config['timestamp']}&url={url}"
        )
        return bool(
            config.get("appId") == APP_ID
            and hashlib.sha1(plain.encode()).hexdigest() == config["signature"]
        )

    # --- the HTTP side ----------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body: dict[str, Any] = {}
        if method == "POST":
            raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._json(h, method, url.path, {"errcode": 47001, "errmsg": "data format error"})
                return
        routes = {
            ("POST", "/cgi-bin/stable_token"): self._stable_token,
            ("GET", "/sns/oauth2/access_token"): self._sns_token,
            ("GET", "/cgi-bin/ticket/getticket"): self._ticket,
            ("POST", "/cgi-bin/message/subscribe/bizsend"): self._bizsend,
        }
        if method == "GET" and url.path == "/connect/oauth2/authorize":
            self._authorize(h, query)
        elif method == "GET" and url.path == "/open/js/jweixin-1.6.0.js":
            data = JSSDK.encode()
            h.send_response(200)
            h.send_header("Content-Type", "text/javascript; charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        elif (method, url.path) in routes:
            with self.lock:
                answer = routes[(method, url.path)](query, body)
            self._json(h, method, url.path, answer)
        else:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()

    def _json(
        self, h: BaseHTTPRequestHandler, method: str, path: str, answer: dict[str, Any]
    ) -> None:
        with self.lock:
            self.calls.append(Call(method, path, int(answer.get("errcode", 0))))
        data = json.dumps(answer, ensure_ascii=False).encode()
        h.send_response(200)  # WeChat answers errors with 200 and an errcode
        h.send_header("Content-Type", "application/json; encoding=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _check_token(self, token: str | None) -> dict[str, Any] | None:
        if token and token in self.expired:
            return {"errcode": 42001, "errmsg": "access_token expired"}
        if not token or token != self.token:
            return {
                "errcode": 40001,
                "errmsg": "invalid credential, access_token is invalid or not latest",
            }
        return None

    def _stable_token(self, _: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") != "client_credential":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        if body.get("appid") != APP_ID:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if body.get("secret") != SECRET:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        if body.get("force_refresh") is True:
            self.force_refreshes += 1
            if self.token:
                self.expired.add(self.token)
            self.token = None
        if self.token is None:
            self.token = "standin-token-" + secrets.token_hex(12)
            self.tokens_issued += 1
        return {"access_token": self.token, "expires_in": 7200}

    def _authorize(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        redirect = q.get("redirect_uri", "")
        problem = None
        if q.get("appid") != APP_ID:
            problem = "10016 appid"
        elif urlsplit(redirect).hostname != self.oauth_domain:
            problem = "10003 redirect_uri域名与后台配置不一致"
        elif q.get("response_type") != "code" or q.get("scope") != "snsapi_base":
            problem = "10005 scope"
        elif not q.get("state"):
            problem = "10013 state不能为空"
        if problem:
            with self.lock:
                self.calls.append(Call("GET", "/connect/oauth2/authorize", int(problem[:5])))
            data = problem.encode()
            h.send_response(200)
            h.send_header("Content-Type", "text/plain; charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        code = secrets.token_hex(16)
        with self.lock:
            self.codes[code] = self.user
            self.calls.append(Call("GET", "/connect/oauth2/authorize", 0))
        sep = "&" if "?" in redirect else "?"
        h.send_response(302)
        h.send_header("Location", redirect + sep + urlencode({"code": code, "state": q["state"]}))
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _sns_token(self, q: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        if q.get("appid") != APP_ID or q.get("secret") != SECRET:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        if q.get("grant_type") != "authorization_code":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        openid = self.codes.pop(q.get("code", ""), None)  # each code works once
        if openid is None:
            return {"errcode": 40029, "errmsg": "invalid code"}
        self.known_users.add(openid)
        return {
            "access_token": "sns-" + secrets.token_hex(8),
            "expires_in": 7200,
            "refresh_token": "sns-refresh-" + secrets.token_hex(8),
            "openid": openid,
            "scope": "snsapi_base",
        }

    def _ticket(self, q: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        bad = self._check_token(q.get("access_token"))
        if bad:
            return bad
        if q.get("type") != "jsapi":
            return {"errcode": 40097, "errmsg": "invalid args"}
        return {"errcode": 0, "errmsg": "ok", "ticket": self.ticket, "expires_in": 7200}

    def _bizsend(self, q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        bad = self._check_token(q.get("access_token"))
        if bad:
            return bad
        touser = str(body.get("touser", ""))
        self.attempts[touser] += 1
        if self.busy:
            self.busy -= 1
            return {"errcode": -1, "errmsg": "system error"}
        if self.daily_quota_left is not None and self.daily_quota_left <= 0:
            return {"errcode": 45009, "errmsg": "reach max api daily quota limit"}
        if self.minute_limited:
            self.minute_limited -= 1
            return {
                "errcode": 45011,
                "errmsg": "api minute-quota reach limit, must slower, retry next minute",
            }
        if body.get("template_id") != TEMPLATE_ID:
            return {"errcode": 40037, "errmsg": "invalid template_id"}
        if touser not in self.known_users:
            return {"errcode": 40003, "errmsg": "invalid openid"}
        data = body.get("data")
        if (
            not isinstance(data, dict)
            or not data
            or any(not isinstance(v, dict) or not str(v.get("value", "")) for v in data.values())
        ):
            return {"errcode": 47003, "errmsg": "argument invalid! data is empty"}
        for key, v in data.items():
            if key.startswith("thing") and len(str(v["value"])) > 20:
                return {"errcode": 47003, "errmsg": f"argument invalid! data.{key}.value"}
        key = (touser, str(body.get("template_id")))
        if self.credits[key] <= 0:
            return {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
        self.credits[key] -= 1
        if self.daily_quota_left is not None:
            self.daily_quota_left -= 1
        self.sent.append(body)
        return {"errcode": 0, "errmsg": "ok"}
