"""schemathesis against the running server's /openapi.json: every operation,
with generated and mutated inputs, as an admin (so the requests get past
the login into the handlers) and anonymously: never a 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err

from tests.support import Mosquitto, Services, write_rooms_csv

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
# An endless stream, and a logout that would end the admin's token for the
# rest of the run (both tested elsewhere: test_alerts, test_auth).
SKIP = {("GET", "/api/stream"), ("POST", "/api/auth/logout")}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, str]]:
    tmp = tmp_path_factory.mktemp("api-fuzz")
    broker = Mosquitto(tmp / "mosquitto").start()
    rooms = write_rooms_csv(tmp / "rooms.csv", [("T1-0101", "dev-a"), ("T1-0201", None)])
    svc = Services(broker, tmp, rooms)
    svc.start_server()  # the gateway plays no part in the API
    try:
        yield svc, svc.login("admin", svc.ADMIN_PASSWORD)
    finally:
        svc.server.stop()
        broker.stop()


def operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, from the app itself (no server needed)."""
    from mamaroom.config import Settings
    from server.app import create_app

    spec = create_app(Settings()).openapi()
    # The login endpoints last: fuzzing them trips the failed-login limit,
    # after which the admin could not log in again.
    return sorted(
        ((m.upper(), p) for p, ops in spec["paths"].items() for m in ops),
        key=lambda op: (op[1].startswith("/api/auth/"), op),
    )


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("method, path", operations())
def test_no_input_makes_a_server_error(
    method: str, path: str, running: tuple[Services, str]
) -> None:
    if (method, path) in SKIP:
        pytest.skip("tested elsewhere")
    svc, token = running
    me = svc.http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    if me.status_code != 200:  # a fuzzed request ended it (a new admin password)
        token = svc.login("admin", svc.ADMIN_PASSWORD)
    seen: list[int] = []
    api = schemathesis.openapi.from_url(f"{svc.base_url}/openapi.json")
    operations = []
    for r in api.get_all_operations():
        if isinstance(r, Err):
            raise r.err()  # an operation schemathesis cannot read
        operations.append(r.ok())
    [operation] = [op for op in operations if (op.method.upper(), op.path) == (method, path)]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def no_5xx(case: Any) -> None:
        for headers in ({"Authorization": f"Bearer {token}"}, {}):
            response = case.call(base_url=svc.base_url, headers=headers, timeout=30)
            if headers:
                seen.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.body!r} -> "
                f"{response.status_code}: {response.text[:300]}\n{svc.server.log_tail(20)}"
            )

    no_5xx()
    # As the admin, the requests got past the login into the handlers.
    assert any(code not in (401, 403) for code in seen), seen[:20]
