"""Logins cannot hold up an emergency call, cannot lock out the right
password, count concurrent tries exactly and believe X-Forwarded-For only
from configured proxies; the password policy. Real server, broker, gateway."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mamaroom.config import AuthSettings
from server.services.accounts import LoginLimiter, LoginRefused, password_problem
from tests.support import ROOT, Device, DeviceFactory, Mosquitto, Services, wait_for
from tests.web_load import LoginStorm, client_address, concurrent_logins

CALLS = 20


def login(
    base_url: str, name: str, password: str, address: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(
        base_url=base_url, timeout=30, transport=httpx.HTTPTransport(local_address=address)
    ) as c:
        return c.post(
            "/api/auth/token", data={"username": name, "password": password}, headers=headers
        )


def test_calls_are_acked_during_a_login_storm(
    broker: Mosquitto, tmp_path: Path, rooms_csv: Path, device_factory: DeviceFactory
) -> None:
    svc = Services(
        broker, tmp_path, rooms_csv, MAMAROOM_AUTH__BACKOFF_MAX_S="4", MAMAROOM_LOG__LEVEL="info"
    ).start()
    try:
        dev: Device = device_factory("dev-a")
        dev.occupancy(False)
        svc.wait_room_state("T1-0101", "free")
        with LoginStorm(svc.base_url, workers=300) as storm:
            assert storm.warm.wait(timeout=180), f"storm never got going: {storm.counts}"
            checked_before = storm.counts[401]
            for i in range(CALLS):
                call_id = f"storm-{i}"
                dev.call("press", call_id)
                wait_for(
                    lambda: "received" in dev.statuses(call_id),  # noqa: B023 (polled before the loop moves on)
                    timeout=120,
                    what=f"{call_id} received",
                    detail=svc.logs,
                )
                dev.call("reset", call_id)
                wait_for(
                    lambda: "resolved" in dev.statuses(call_id),  # noqa: B023 (polled before the loop moves on)
                    timeout=120,
                    what=f"{call_id} resolved",
                    detail=svc.logs,
                )
            checked_during = storm.counts[401] - checked_before
            # The real admin, from an address of its own, gets in during the
            # storm (after a 503 or two while every login slot is taken).
            wait_for(
                lambda: (
                    login(svc.base_url, "admin", Services.ADMIN_PASSWORD, "127.0.0.1").status_code
                    == 200
                ),
                timeout=60,
                interval=0.5,
                what="admin login during the storm",
            )
            counts = dict(storm.counts)
        # The storm was real: passwords were being checked while the calls ran.
        assert checked_during > 0, counts
        assert counts.get(503, 0) > 0, counts  # the global cap answered the excess
        # Every call was raised once and resolved: nothing lost.
        alerts = svc.admin("GET", "/api/alerts", params={"kind": "call"}).json()
        mine = {a["call_id"]: a["status"] for a in alerts if a["call_id"].startswith("storm-")}
        assert mine == {f"storm-{i}": "resolved" for i in range(CALLS)}, mine
        # The right password still works from an address that failed hundreds
        # of times: slowed (at most auth.backoff_max_s here), never locked out.
        stormer = client_address(0)
        wait_for(
            lambda: (
                login(svc.base_url, "admin", Services.ADMIN_PASSWORD, stormer).status_code == 200
            ),
            timeout=60,
            interval=0.5,
            what="the right password from a stormer's address",
        )
        # Without trusted proxies, X-Forwarded-For from 127.0.0.1 is ignored.
        r = login(svc.base_url, "nobody-xff", "wrong password", "127.0.0.1", "10.66.0.1")
        assert r.status_code == 401
        logged = [line for line in svc.server.log().splitlines() if "nobody-xff" in line]
        assert logged and all("127.0.0.1" in line and "10.66.0.1" not in line for line in logged), (
            logged
        )
    finally:
        svc.stop()


@pytest.fixture
def strict(broker: Mosquitto, tmp_path: Path, rooms_csv: Path) -> Iterator[Services]:
    """A server with a long delay (no try can slip in after it by timing) that
    trusts X-Forwarded-For from 127.0.0.1 only."""
    svc = Services(
        broker,
        tmp_path,
        rooms_csv,
        MAMAROOM_AUTH__BACKOFF_BASE_S="600",
        MAMAROOM_AUTH__BACKOFF_MAX_S="600",
        MAMAROOM_SERVER__TRUSTED_PROXIES='["127.0.0.1"]',
    ).start()
    yield svc
    svc.stop()


def test_concurrent_tries_count_exactly(strict: Services) -> None:
    attacker, elsewhere = "127.0.3.1", "127.0.3.2"
    counts = asyncio.run(
        concurrent_logins(strict.base_url, 200, "admin", "not the password", attacker)
    )
    assert counts[401] == 5, counts  # auth.free_attempts, not one more
    # The rest: refused unchecked (429), or over the per-address connection cap
    # (503, or a reset once too many refused connections are lingering).
    assert sum(counts.values()) == 200 and set(counts) <= {0, 401, 429, 503}, counts
    assert counts[429] > 0, counts
    # That address is slowed down, even with the right password ...
    r = login(strict.base_url, "admin", Services.ADMIN_PASSWORD, attacker)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # ... but the real admin, from an address that has not failed, gets in.
    assert login(strict.base_url, "admin", Services.ADMIN_PASSWORD, elsewhere).status_code == 200


def test_forwarded_for_only_from_a_trusted_proxy(strict: Services) -> None:
    # Through the trusted proxy (127.0.0.1): each forwarded address is a client
    # of its own, so six failures from six of them are six first failures.
    for i in range(6):
        r = login(strict.base_url, f"px-{i}", "wrong password", "127.0.0.1", f"10.9.0.{i + 1}")
        assert r.status_code == 401, r.text
    # From anyone else the header is ignored: one address, slowed after five.
    codes = [
        login(
            strict.base_url, f"dx-{i}", "wrong password", "127.0.3.3", f"10.9.1.{i + 1}"
        ).status_code
        for i in range(6)
    ]
    assert codes == [401] * 5 + [429]
    log = strict.server.log()
    assert "addr=10.9.0.1" in log and "addr=10.9.0.6" in log
    assert "10.9.1." not in log and "addr=127.0.3.3" in log


BAD_PASSWORDS = {
    " " * 10: "at least 10 characters",
    "1234567890": "most common passwords",
    "qwertyuiop": "most common passwords",
    "li.ming": "at least 10 characters",
    "li.ming2024": "besides the name",
    "LI.MING-li.ming": "besides the name",
    "aaaaabbbbbaaaaa": "different characters",
}


def test_password_policy_in_the_admin_api_and_the_cli(strict: Services) -> None:
    for password, why in BAD_PASSWORDS.items():
        r = strict.admin(
            "PUT", "/api/admin/users/li.ming", json={"role": "staff", "password": password}
        )
        assert r.status_code == 422 and why in r.json()["detail"], (password, r.text)
    assert strict.admin("GET", "/api/admin/users").json() == [
        {"name": "admin", "role": "admin", "disabled": False}
    ]  # nothing was stored
    r = strict.admin(
        "PUT",
        "/api/admin/users/li.ming",
        json={"role": "staff", "password": "li.ming's night shift"},
    )
    assert r.status_code == 204
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "user", "add", "wu", "--role", "staff", "--password-stdin"],
        input="1q2w3e4r5t\n",
        text=True,
        env=strict.env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert cli.returncode == 2 and "most common passwords" in cli.stderr, cli.stderr


@pytest.mark.parametrize(
    ("name", "password", "why"),
    [("li.ming", pw, why) for pw, why in BAD_PASSWORDS.items()]
    + [
        ("admin", "Password123", "most common"),
        ("admin", "test-admin-password", None),
        ("li.ming", "correct horse battery", None),
        ("zhang", "梅花香自苦寒来也", "at least 10"),
        ("zhang", "梅花香自苦寒来也要等", None),
    ],
)
def test_password_rules(name: str, password: str, why: str | None) -> None:
    problem = password_problem(name, password)
    assert (problem is None) if why is None else (problem is not None and why in problem.en)
    # Said in both languages: the admin page shows the Chinese.
    assert problem is None or "密码" in problem.zh


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_slows_down_and_forgets() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(
        AuthSettings(backoff_base_s=1, backoff_max_s=8, failure_window_s=100), clock
    )
    # Five tries admitted at once take every free attempt; the sixth waits.
    tickets = [limiter.admit("admin", "a") for _ in range(5)]
    with pytest.raises(LoginRefused) as refused:
        limiter.admit("admin", "a")
    assert refused.value.status == 429
    for t in tickets:
        limiter.failed(t)
    delays = []
    for _ in range(6):  # 1, 2, 4, 8, 8, 8 s after each further failure
        with pytest.raises(LoginRefused) as refused:
            limiter.admit("admin", "a")
        delays.append(refused.value.retry_after_s)
        clock.now += refused.value.retry_after_s
        limiter.failed(limiter.admit("admin", "a"))
    assert delays == [1, 2, 4, 8, 8, 8]
    # A clean address is not held up by the user's failures; a failing one is.
    limiter.succeeded(limiter.admit("admin", "b"))
    limiter.failed(limiter.admit("other", "c"))
    with pytest.raises(LoginRefused):
        limiter.admit("admin", "a")
    # The right password gets in at the first try after the delay.
    clock.now += 8
    limiter.succeeded(limiter.admit("admin", "a"))
    limiter.admit("admin", "a")  # and the counters are gone
    # An abandoned check (client gone) is no failure; failures are forgotten.
    limiter2 = LoginLimiter(AuthSettings(free_attempts=1, failure_window_s=100), clock)
    limiter2.abandon(limiter2.admit("x", "d"))
    limiter2.failed(limiter2.admit("x", "d"))
    with pytest.raises(LoginRefused):
        limiter2.admit("x", "d")
    clock.now += 101
    limiter2.admit("x", "d")


def test_the_global_cap_refuses_at_once() -> None:
    limiter = LoginLimiter(AuthSettings(max_concurrent_logins=2))
    held = [limiter.admit(f"u{i}", f"a{i}") for i in range(2)]
    with pytest.raises(LoginRefused) as refused:
        limiter.admit("u3", "a3")
    assert refused.value.status == 503
    limiter.failed(held[0])
    limiter.admit("u3", "a3")
