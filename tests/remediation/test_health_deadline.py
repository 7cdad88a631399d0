"""The health function answers within 10 s whatever its dependencies do: every one of
them a black hole (takes the connection, never answers), or refusing connections."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from devstack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from devstack.blackhole import BlackHole
from devstack.functions_host import FunctionsHost, HttpResult
from devstack.ports import free_port
from shared.app.health import HEALTH_SECONDS, health_report
from shared.app.runtime import get_runtime, reset_runtime
from tests.conftest import REPO, FunctionApp, Stack
from tests.helpers import DEPENDENCY_CHECKS

pytestmark = pytest.mark.stack

DEPENDENCIES = ("site database", "storage", "Entra ID", "AdminService")
#: Every check of the shipped rules.json (three AdminService rules).
CHECKS = {*DEPENDENCY_CHECKS, "collection PS100123", "collection PS100124", "collection PS100125"}


def settings_pointing_at(stack: Stack, ports: dict[str, int]) -> dict[str, str]:
    """The stack's settings with every dependency moved to the given loopback ports."""
    storage = f"http://127.0.0.1:{ports['storage']}/{ACCOUNT_NAME}"
    return stack.settings_values(
        SITE_DB_CONNECTION=re.sub(
            r"Port=\d+", f"Port={ports['site database']}", stack.site_db.reader_connection_string
        ),
        AzureWebJobsStorage=(
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={storage};QueueEndpoint={storage};TableEndpoint={storage};"
        ),
        ENTRA_AUTHORITY_HOST=f"https://127.0.0.1:{ports['Entra ID']}",
        ADMINSERVICE_URL=f"https://127.0.0.1:{ports['AdminService']}/AdminService",
        AzureWebJobsScriptRoot=str(REPO),
        EXPORT_SCHEDULE="0 */5 * * * *",
    )


@pytest.fixture
def health_app(
    stack: Stack, functions_host: FunctionsHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, int]], HttpResult]]:
    """``GET /api/health`` through the worker, with the app's dependencies at the given
    ports."""

    def call(ports: dict[str, int]) -> HttpResult:
        for name, value in settings_pointing_at(stack, ports).items():
            monkeypatch.setenv(name, value)
        reset_runtime()
        return FunctionApp(functions_host).health()

    yield call
    reset_runtime()  # does not wait for the probes still hanging


@pytest.fixture
def black_holes() -> Iterator[dict[str, BlackHole]]:
    with contextlib.ExitStack() as holes:
        yield {name: holes.enter_context(BlackHole()) for name in DEPENDENCIES}


def probe_threads(before: set[threading.Thread]) -> Counter[str]:
    """Probe threads started since ``before`` (earlier tests' probes may still hang)."""
    return Counter(
        t.name for t in threading.enumerate() if t.name.startswith("probe: ") and t not in before
    )


def test_every_dependency_black_holed_answers_503_within_10_s(health_app, black_holes):
    before = set(threading.enumerate())
    started = time.monotonic()
    response = health_app({name: hole.port for name, hole in black_holes.items()})
    elapsed = time.monotonic() - started
    print(f"\nhealth, every dependency black-holed: {response.status} in {elapsed:.2f} s")
    assert response.status == 503
    assert elapsed < 10
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["configuration"] == []
    checks = {c["name"]: c for c in body["checks"]}
    assert checks.pop("settings and rules")["ok"]
    assert set(checks) == CHECKS
    for check in checks.values():
        assert not check["ok"]
        assert check["detail"] == f"no answer within {HEALTH_SECONDS:g} s", check
        assert check["hint"]
    assert body["figures"]["errors"] == [
        f"site database: no answer within {HEALTH_SECONDS:g} s",
        f"storage: no answer within {HEALTH_SECONDS:g} s",
    ]
    # They really were asked (the AdminService is not: the token comes first).
    for name in ("site database", "storage", "Entra ID"):
        assert black_holes[name].accepted, name

    # Asked again while those probes still hang: no new thread, and it says why.
    threads = probe_threads(before)
    assert sum(threads.values()) == len(CHECKS) + 2  # and the two figures
    status, again = health_report(get_runtime(), seconds=1)
    assert status == 503
    for check in again["checks"][1:]:
        assert "by an earlier call is still waiting" in check["detail"], check
    assert probe_threads(before) == threads


def test_every_dependency_refusing_answers_503_within_10_s(health_app):
    started = time.monotonic()
    response = health_app({name: free_port() for name in DEPENDENCIES})
    elapsed = time.monotonic() - started
    print(f"\nhealth, every dependency refusing: {response.status} in {elapsed:.2f} s")
    assert response.status == 503
    assert elapsed < 10
    body = response.json()
    failed = {c["name"] for c in body["checks"] if not c["ok"]}
    assert failed == CHECKS
    assert len(body["figures"]["errors"]) == 2
