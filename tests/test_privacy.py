"""Privacy by default (PIPL): the public API never carries personal data;
records about people are deleted by the server itself when their time is
up, and by an operator with `mamaroom purge --before DATE`
(server/services/retention.py, docs/privacy.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from server.alerts_db import AlertsDb
from server.services.webpush import PushDb
from server.services.wechat import WechatDb
from server.surfaces import PUBLIC, PUBLIC_STATIC, SURFACE_HEADER
from tests.support import ROOT, Device, Mosquitto, Services, wait_for
from tests.test_webpush import Browser

DAY_MS = 86_400_000
#: What must never reach the public: a staff member's name and pager number
#: (roster), an account's name, phones' push addresses and keys, an address.
NURSE, PAGER, ACCOUNT = "Wang Fangfang", "80417362", "nurse.lin"
PHONE_IP = "198.51.100.77"


@pytest.fixture
def private_services(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, vapid: tuple[str, str]
) -> Iterator[Services]:
    roster = [{"name": NURSE, "pager": PAGER}]
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_PAGES__VAPID_PUBLIC_KEY=vapid[0],
        MAMAROOM_PAGES__VAPID_PRIVATE_KEY=vapid[1],
        MAMAROOM_PAGES__PUSH_HOSTS='["http://127.0.0.1"]',
        MAMAROOM_SERVER__TRUSTED_PROXIES='["127.0.0.1"]',
        MAMAROOM_ESCALATION__ROSTER=json.dumps(roster),
    ).start()
    yield svc
    svc.stop()


def public_requests(room: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """How to call each public route (a route with no entry fails the test)."""
    mother = Browser("http://127.0.0.1:9/push/mother-unsubscribed").subscription
    return {
        ("GET", "/"): [{}],
        ("GET", "/r/{room_id}"): [{"url": f"/r/{room}"}],
        ("GET", "/sw.js"): [{}],
        ("GET", "/manifest.webmanifest"): [{}],
        ("GET", "/static/{path}"): [{"url": f"/static/{f}"} for f in sorted(PUBLIC_STATIC)],
        ("GET", "/api/rooms"): [{}, {"params": {"building": "测试楼"}}],
        ("GET", "/api/rooms/{room_id}"): [{"url": f"/api/rooms/{room}"}],
        ("GET", "/api/stream"): [],  # read below, while things happen
        ("GET", "/api/site"): [{}],
        ("GET", "/api/wait"): [
            {"params": {"rooms": room}},
            {"params": {"building": "测试楼", "floor": 1}},
        ],
        ("GET", "/api/push/key"): [{}],
        ("POST", "/api/push/reminder"): [
            {"json": {"subscription": mother, "rooms": [room]}},
            {"json": {"subscription": mother}},
        ],  # a 422
        ("POST", "/api/push/unsubscribe"): [{"json": {"endpoint": mother["endpoint"]}}],
        # WeChat is off here (its routes answer for themselves); with it on,
        # tests/test_wechat.py checks that no openid leaves the server.
        ("GET", "/wechat/oauth/start"): [{"params": {"next": "/"}}],
        ("GET", "/wechat/oauth/callback"): [{"params": {"code": "x", "state": "y"}}],
        ("GET", "/api/wechat/config"): [{}],
        ("GET", "/api/wechat/jssdk"): [{"params": {"url": "http://127.0.0.1/"}}],
        ("POST", "/api/wechat/reminder"): [{"json": {"rooms": [room]}}],
        ("DELETE", "/api/wechat/reminder"): [{}],
        ("GET", "/wechat/events"): [
            {"params": {"signature": "s", "timestamp": "1", "nonce": "n", "echostr": "e"}}
        ],
        ("POST", "/wechat/events"): [
            {"params": {"signature": "s", "timestamp": "1", "nonce": "n"}, "content": b"<xml/>"}
        ],
    }


def test_the_public_api_carries_no_personal_data(private_services: Services) -> None:
    svc = private_services
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "user",
            "add",
            ACCOUNT,
            "--role",
            "staff",
            "--password-stdin",
        ],
        input="a long nurse password\n",
        text=True,
        env=svc.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    nurse = {"Authorization": f"Bearer {svc.login(ACCOUNT, 'a long nurse password')}"}
    staff_phone = Browser("http://127.0.0.1:9/push/staffphone-7731")
    assert (
        svc.http.post(
            "/api/push/staff", json={"subscription": staff_phone.subscription}, headers=nurse
        ).status_code
        == 204
    )
    mother_phone = Browser("http://127.0.0.1:9/push/motherphone-5521")
    node, other = Device(svc.broker.port, "dev-a"), Device(svc.broker.port, "dev-b")
    try:
        other.occupancy(True)
        svc.wait_room_state("T1-0201", "occupied")
        r = svc.http.post(
            "/api/push/reminder",
            json={"subscription": mother_phone.subscription, "rooms": ["T1-0201"]},
            headers={"X-Forwarded-For": PHONE_IP},
        )
        assert r.status_code == 204, r.text
        node.call("press", "private-1")
        [alert] = wait_for(lambda: svc.admin("GET", "/api/alerts").json(), what="the call")
        r = svc.http.post(f"/api/alerts/{alert['id']}/ack", headers=nurse)
        assert r.status_code == 200 and r.json()["acknowledged_by"] == ACCOUNT

        secrets = [
            NURSE,
            PAGER,
            ACCOUNT,
            PHONE_IP,
            "staffphone-7731",
            "motherphone-5521",
            *staff_phone.subscription["keys"].values(),
            *mother_phone.subscription["keys"].values(),
        ]
        recipes = public_requests("T1-0101")
        assert set(recipes) == set(PUBLIC), "a public route without a request here"
        seen = []
        for (method, path), calls in sorted(recipes.items()):
            for call in calls:
                url = call.get("url", path)
                kwargs = {k: v for k, v in call.items() if k != "url"}
                # Anonymous, and as the public surface with a staff token (dropped there).
                for headers in (
                    {"X-Forwarded-For": PHONE_IP},
                    {"X-Forwarded-For": PHONE_IP, SURFACE_HEADER: "public", **nurse},
                ):
                    r = svc.http.request(method, url, headers=headers, **kwargs)
                    assert r.status_code < 500, (method, url, r.status_code)
                    seen.append(f"{method} {url} {r.status_code}\n{r.headers}\n{r.text}")
        seen.append(_stream(svc, other, {"X-Forwarded-For": PHONE_IP}))
        seen.append(_stream(svc, other, {SURFACE_HEADER: "public", **nurse}))
    finally:
        node.close()
        other.close()
    everything = "\n".join(seen)
    assert "T1-0101" in everything and "snapshot" in everything  # it did read the answers
    leaked = [s for s in secrets if s in everything]
    assert leaked == [], leaked


def _stream(svc: Services, node: Device, headers: dict[str, str]) -> str:
    """The stream's text from its snapshot to a room change made after it."""
    out = []
    with httpx.stream("GET", f"{svc.base_url}/api/stream", headers=headers, timeout=30) as resp:
        lines = resp.iter_lines()
        while not (line := next(lines)).startswith("data: "):
            out.append(line)
        out.append(line)
        node.occupancy(not svc.room("T1-0201")["state"] == "occupied")
        for line in lines:
            out.append(line)
            if line == "event: room":
                out.append(next(lines))
                break
    return "\n".join(out)


# --- retention ----------------------------------------------------------------


def seed(db_path: Path, now_ms: int) -> dict[str, int]:
    """Rows of every age, written before the server starts: the server's
    own schema first (its classes), then plain SQL for the past."""

    async def schema() -> None:
        for db in (AlertsDb(db_path), PushDb(db_path), WechatDb(db_path)):
            await db.open()
            await db.close()

    asyncio.run(schema())
    ids = {}
    with sqlite3.connect(db_path) as db:

        def alert(kind: str, status: str, raised_ms: int, resolved_ms: int | None) -> int:
            cur = db.execute(
                "INSERT INTO alerts (kind, priority, room, device, call_id, status, raised_at_ms,"
                " acknowledged_at_ms, acknowledged_by, resolved_at_ms, resolved_by) VALUES"
                " (?, 'high', 'T1-0101', 'dev-a', ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    f"c{raised_ms}",
                    status,
                    raised_ms,
                    raised_ms + 60_000,
                    ACCOUNT,
                    resolved_ms,
                    ACCOUNT if resolved_ms else None,
                ),
            )
            assert cur.lastrowid is not None
            for what, at in (("raised", raised_ms), ("acknowledged", raised_ms + 60_000)):
                db.execute(
                    "INSERT INTO alert_events (alert_id, at_ms, what, who) VALUES (?, ?, ?, ?)",
                    (cur.lastrowid, at, what, ACCOUNT),
                )
            return cur.lastrowid

        year = 365 * DAY_MS
        ids["old"] = alert(
            "call", "resolved", now_ms - year - 10 * DAY_MS, now_ms - year - 10 * DAY_MS + 600_000
        )
        db.execute(
            "INSERT INTO joined_calls VALUES ('dev-b', 'j1', ?, ?)",
            (ids["old"], now_ms - year - 10 * DAY_MS),
        )
        ids["old_cancelled"] = alert("welfare", "cancelled", now_ms - 2 * year, now_ms - 2 * year)
        # Closed 364 days ago, though raised 400 days ago: kept, counted from its close.
        ids["closed_late"] = alert("call", "resolved", now_ms - 400 * DAY_MS, now_ms - 364 * DAY_MS)
        ids["recent"] = alert(
            "call", "resolved", now_ms - 10 * DAY_MS, now_ms - 10 * DAY_MS + 600_000
        )
        ids["old_open"] = alert("welfare", "acknowledged", now_ms - 2 * year, None)
        for name, created in (("lapsed", now_ms - 3 * 3_600_000), ("live", now_ms - 600_000)):
            sub = Browser(f"http://127.0.0.1:9/push/{name}").subscription
            db.execute(
                "INSERT INTO push_subscriptions VALUES (?, ?, 'mother', NULL, ?, 'zh', ?, ?)",
                (sub["endpoint"], json.dumps(sub), '["T1-0101"]', created, created + 2 * 3_600_000),
            )
        staff = Browser("http://127.0.0.1:9/push/staff-old").subscription
        db.execute(
            "INSERT INTO push_subscriptions VALUES (?, ?, 'staff', ?, '[]', 'zh', ?, NULL)",
            (staff["endpoint"], json.dumps(staff), ACCOUNT, now_ms - year * 2),
        )
    return ids


def rows(db_path: Path) -> dict[str, Any]:
    with sqlite3.connect(db_path) as db:
        return {
            "alerts": {r[0] for r in db.execute("SELECT id FROM alerts")},
            "events": {r[0] for r in db.execute("SELECT DISTINCT alert_id FROM alert_events")},
            "joined": db.execute("SELECT count(*) FROM joined_calls").fetchone()[0],
            "pushes": {
                r[0].rsplit("/", 1)[1]
                for r in db.execute("SELECT endpoint FROM push_subscriptions")
            },
        }


def log_events(svc: Services, event: str) -> list[dict[str, Any]]:
    out = []
    for line in svc.server.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            out.append(entry)
    return out


def test_the_server_deletes_what_is_past_its_time_and_says_how_many(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path
) -> None:
    db_path = tmp_path / "data" / "server.sqlite"
    db_path.parent.mkdir(parents=True)
    ids = seed(db_path, int(time.time() * 1000))
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_LOG__FORMAT="json",
        MAMAROOM_RETENTION__INTERVAL_S="0.5",
    )
    svc.start_server()
    try:
        [first] = wait_for(
            lambda: [e for e in log_events(svc, "retention applied") if e.get("alerts")][:1],
            what="the first retention round",
            detail=svc.logs,
        )
        assert (
            first["alerts"],
            first["alert_events"],
            first["joined_calls"],
            first["reminders"],
            first["alert_days"],
        ) == (2, 4, 1, 1, 365), first
        assert first["level"] == "info"
        left = rows(db_path)
        kept = {ids["closed_late"], ids["recent"], ids["old_open"]}
        assert left["alerts"] == kept and left["events"] == kept
        assert left["joined"] == 0
        # The lapsed reminder went; the live one and a staff phone's stay.
        assert left["pushes"] == {"live", "staff-old"}
        # It keeps going: a reminder that lapses while the server runs goes too.
        with sqlite3.connect(db_path) as db:
            db.execute(
                "UPDATE push_subscriptions SET created_ms = created_ms - 7200000,"
                " expires_ms = expires_ms - 7200000 WHERE endpoint LIKE '%/live'"
            )
        wait_for(
            lambda: rows(db_path)["pushes"] == {"staff-old"}, what="the next round", detail=svc.logs
        )
        assert svc.http.get("/readyz").status_code == 200
    finally:
        svc.server.stop()


# --- mamaroom purge ---------------------------------------------------------------


def purge(
    env: dict[str, str], *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "purge", *args],
        env=env,
        cwd=ROOT,
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_purge_before_a_date(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db_path = data / "server.sqlite"
    now_ms = int(time.time() * 1000)
    ids = seed(db_path, now_ms)
    # Enough old alerts for several batches, and a reminder from long ago.
    with sqlite3.connect(db_path) as db:
        sub = Browser("http://127.0.0.1:9/push/ancient").subscription
        db.execute(
            "INSERT INTO push_subscriptions VALUES (?, ?, 'mother', NULL, '[]', 'zh', ?, ?)",
            (
                sub["endpoint"],
                json.dumps(sub),
                now_ms - 40 * DAY_MS,
                now_ms - 40 * DAY_MS + 7_200_000,
            ),
        )
        # A WeChat reminder and its OAuth session from long ago (openid: the mother).
        db.execute(
            "INSERT INTO wechat_reminders VALUES ('o-ancient', '[]', 'zh', ?, ?)",
            (now_ms - 40 * DAY_MS, now_ms - 40 * DAY_MS + 7_200_000),
        )
        db.execute(
            "INSERT INTO wechat_sessions VALUES ('h-ancient', 'o-ancient', ?)",
            (now_ms - 40 * DAY_MS + 7_200_000,),
        )
        db.executemany(
            "INSERT INTO alerts (kind, priority, status, raised_at_ms,"
            " resolved_at_ms) VALUES ('call', 'high', 'resolved', ?, ?)",
            [(now_ms - 100 * DAY_MS - i, now_ms - 100 * DAY_MS) for i in range(1200)],
        )
    env = {**os.environ, "MAMAROOM_DATA_DIR": str(data)}
    tz = ZoneInfo("Asia/Shanghai")
    day = (dt.datetime.now(tz) - dt.timedelta(days=30)).date().isoformat()

    before = rows(db_path)
    out = purge(env, "--before", day, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "alerts" in out.stdout and "1,203" in out.stdout, out.stdout  # 1,200 + 3 closed
    assert "reminders" in out.stdout and "Dry run: nothing deleted." in out.stdout
    assert rows(db_path) == before

    out = purge(env, "--before", day, answer="n\n")
    assert out.returncode == 1 and "Nothing deleted." in out.stdout, out.stdout + out.stderr
    assert rows(db_path) == before

    out = purge(env, "--before", day, answer="y\n")
    assert out.returncode == 0, out.stderr
    assert "deleting alerts: 500 of 1,203" in out.stdout  # progress, batch by batch
    assert "deleting alerts: 1,203 of 1,203" in out.stdout
    assert (
        "Deleted: reminders 1, wechat_reminders 1, wechat_sessions 1,"
        " alerts 1,203, alert_events 6, joined_calls 1." in out.stdout
    ), out.stdout
    left = rows(db_path)
    # Kept: what closed within the last 30 days, the open alert, the
    # reminders set since, the staff phone.
    assert left["alerts"] == {ids["recent"], ids["old_open"]}
    assert left["pushes"] == {"lapsed", "live", "staff-old"}

    again = purge(env, "--before", day, "--yes")
    assert again.returncode == 0 and "Nothing to delete." in again.stdout

    for bad in ("yesterday", "2026-13-01"):
        out = purge(env, "--before", bad)
        assert out.returncode == 2 and "YYYY-MM-DD" in out.stderr
    far = (dt.datetime.now(tz) + dt.timedelta(days=5)).date().isoformat()
    out = purge(env, "--before", far, "--yes")
    assert out.returncode == 2 and "future" in out.stderr
    assert rows(db_path)["alerts"] == {ids["recent"], ids["old_open"]}


# --- the notice -------------------------------------------------------------------


def test_the_notice_says_the_same_everywhere_and_matches_the_rules() -> None:
    """The page's notice in both languages, the HTML (before its script runs)
    and docs/privacy.md agree; a reminder's lapse there is the server's."""
    from server.services.webpush import MOTHER_TTL_S

    js = (ROOT / "dashboard" / "static" / "mothers.js").read_text()
    texts = re.findall(r'privacyText: "([^"]+)"', js)
    assert len(texts) == 2, texts
    zh, en = texts
    doc = (ROOT / "docs" / "privacy.md").read_text()
    for page in ("index.html", "room.html"):
        assert zh in (ROOT / "dashboard" / page).read_text(), page
    assert zh in doc and en in doc
    assert MOTHER_TTL_S == 2 * 3600 and "2 小时" in zh and "2 hours" in en
    assert "openid" in zh and "openid" in en
