"""The export timer through Microsoft's worker while the hybrid connection fails in each
way an operator meets: the listener absent then back, restarted mid-export, a wrong
key, an expired token, a refused port name. Each run that fails says why in its own
words and moves no watermark; the run after the fix delivers every request exactly
once: nothing lost, nothing twice."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from azure.core.exceptions import ResourceNotFoundError

from devstack.datagen import GeneratedStatusMessage, generate_workload
from devstack.relay import RelayBridgeListener, RelayDouble
from devstack.tls import LocalCA
from shared.app.runtime import reset_runtime
from shared.platform.relay.tokens import SasTokens
from shared.platform.retry import RetryPolicy
from tests.conftest import FunctionApp, Stack
from tests.export.conftest import LISTEN, RELAY_PATH, SEND, site_db_connection
from tests.helpers import wait_until

pytestmark = pytest.mark.stack

PATH = RELAY_PATH
#: What tells each fault apart in the operator's message: exactly one appears.
FAULT_WORDS = (
    "no listener is online",
    "the on-premises listener went away",
    "refused the token",
    "the token has expired",
    "refused port name",
    "could not reach SQL Server",
)


@pytest.fixture
def relay(local_ca: LocalCA) -> Iterator[RelayDouble]:
    """The relay double, its namespace "localhost" so that the SAS audience of
    localhost:<port> is its own."""
    with RelayDouble(local_ca, "localhost", hybrid_connections=[site_db_connection()]) as double:
        yield double


@pytest.fixture
def stack(stack: Stack, relay: RelayDouble, local_ca: LocalCA) -> Stack:
    """The site database only through the hybrid connection (Azure Relay Bridge)."""
    stack.source_settings = {
        "SITE_DB_RELAY_NAMESPACE": f"localhost:{relay.port}",
        "SITE_DB_RELAY_PATH": PATH,
        "SITE_DB_RELAY_LISTENER": "bridge",
        "SITE_DB_RELAY_KEY_NAME": SEND,
        "SITE_DB_RELAY_KEY": relay.key(PATH, SEND),
        "TLS_CA_BUNDLE": str(local_ca.bundle_path),
    }
    return stack


@pytest.fixture
def quick_retries(runtime_overrides: Callable[..., None]) -> None:
    """Two attempts a few milliseconds apart: a failing run ends in a second, not 7 s."""
    runtime_overrides(site_db_retry=RetryPolicy(attempts=2, initial_backoff_seconds=0.05))


def _listener(relay: RelayDouble, stack: Stack, ca: LocalCA, *, port_name: str = "sql"):
    return RelayBridgeListener(
        relay.endpoint(PATH),
        partial(relay.sas_token, PATH, LISTEN),
        targets={port_name: ("127.0.0.1", stack.site_db.port)},
        ca_bundle=ca.bundle_path,
    )


def _workload(stack: Stack, count: int) -> Counter[tuple[str, int, str]]:
    """``count`` generated status messages in the site database; the requests they
    must become, by construction."""
    workload = generate_workload(seed=14, sites=("PS1", "PS2"), message_count=count)
    return _expected(stack, workload.messages)


def _expected(
    stack: Stack, messages: list[GeneratedStatusMessage]
) -> Counter[tuple[str, int, str]]:
    ids = stack.site_db.insert_status_messages(messages)
    return Counter(
        (m.site_code, rid, rule)
        for m, rid in zip(messages, ids, strict=True)
        for rule in m.expected_rules
    )


def _keys(stack: Stack) -> Counter[tuple[str, int, str]]:
    return Counter((r.site_code, r.record_id, r.rule) for r in stack.drain())


def _watermarks(stack: Stack) -> dict[str, int | None]:
    store = stack.runtime().watermarks
    marks: dict[str, int | None] = {}
    for site in ("PS1", "PS2"):
        state, _ = store.load(site)
        marks[site] = None if state is None else state.high_record_id
    return marks


def _fails_saying(app: FunctionApp, stack: Stack, kind: str, fault: str) -> str:
    """One export tick that fails with a ``kind`` error saying ``fault`` (and no other
    fault's words); nothing enqueued and no watermark moved."""
    before = _watermarks(stack)
    invocation = app.export(check=False)
    assert not invocation.ok
    error = invocation.error or ""
    assert error.startswith(f"{kind}:"), error
    assert [w for w in FAULT_WORDS if w in error] == [fault], error
    assert _keys(stack) == Counter()
    assert _watermarks(stack) == before
    return error


def _reconfigure(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """The operator fixes an app setting; the app restarts with it."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    reset_runtime()


@pytest.mark.usefixtures("quick_retries")
def test_listener_absent_then_back(app, stack, relay, local_ca):
    expected = _workload(stack, 400)
    error = _fails_saying(app, stack, "RelayUnavailable", "no listener is online")
    assert "start the on-premises listener" in error
    with _listener(relay, stack, local_ca) as listener:
        assert listener.wait_online()
        app.export()
    assert _keys(stack) == expected


def test_listener_restarted_mid_export(app, stack, relay, local_ca, caplog):
    expected = _workload(stack, 6000)  # several pages per site
    first = _listener(relay, stack, local_ca).start()
    assert first.wait_online()
    restarted = threading.Event()
    second = _listener(relay, stack, local_ca)

    queue = stack.raw_queue()

    def requests_landed() -> bool:
        with contextlib.suppress(ResourceNotFoundError):  # created by the first send
            return bool(queue.get_queue_properties().approximate_message_count)
        return False

    def restart_once_requests_land() -> None:
        if wait_until(requests_landed, timeout=60):
            first.stop()  # every link it carries ends with 1001
            second.start()
            restarted.set()

    watcher = threading.Thread(target=restart_once_requests_land, daemon=True)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.platform.relay.tunnel"):
            # the default retries (1 s, then 2 s) outlast the restart: the run goes on
            app.export()
        watcher.join(timeout=60)
        assert restarted.is_set(), "the listener was never restarted mid-export"
        assert second.accepted >= 1  # the rest of the run went through the new listener
        assert _keys(stack) == expected
        app.export()  # and the next run finds nothing new
        assert _keys(stack) == Counter()
    finally:
        second.stop()
        first.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any("the on-premises listener went away (close 1001" in m for m in said), said


@pytest.mark.usefixtures("quick_retries")
def test_wrong_key(app, stack, relay, local_ca, monkeypatch):
    expected = _workload(stack, 300)
    with _listener(relay, stack, local_ca) as listener:
        assert listener.wait_online()
        _reconfigure(monkeypatch, SITE_DB_RELAY_KEY="bm90IHRoZSBrZXkgb2YgdGhlIHJ1bGUK")
        error = _fails_saying(app, stack, "RelayRefused", "refused the token")
        assert "SITE_DB_RELAY_KEY" in error and "bm90IHRoZSBr" not in error
        assert listener.accepted == 0
        _reconfigure(monkeypatch, SITE_DB_RELAY_KEY=relay.key(PATH, SEND))
        app.export()
    assert _keys(stack) == expected


@pytest.mark.usefixtures("quick_retries")
def test_expired_token(app, stack, relay, local_ca, runtime_overrides):
    expected = _workload(stack, 300)

    def two_hours_slow() -> float:
        return time.time() - 7200

    skewed = SasTokens(relay.namespace, PATH, SEND, relay.key(PATH, SEND), clock=two_hours_slow)
    runtime_overrides(relay_tokens=skewed)  # a function app whose clock is 2 h behind
    reset_runtime()
    with _listener(relay, stack, local_ca) as listener:
        assert listener.wait_online()
        error = _fails_saying(app, stack, "RelayRefused", "the token has expired")
        assert "clock" in error
        runtime_overrides(relay_tokens=None)
        reset_runtime()
        app.export()
    assert _keys(stack) == expected


@pytest.mark.usefixtures("quick_retries")
def test_refused_port_name(app, stack, relay, local_ca, monkeypatch):
    expected = _workload(stack, 300)
    with _listener(relay, stack, local_ca, port_name="sql-ps1") as listener:
        assert listener.wait_online()
        error = _fails_saying(app, stack, "RelayRefused", "refused port name")
        assert "refused port name 'sql'" in error
        assert "SITE_DB_RELAY_PORT_NAME" in error
        _reconfigure(monkeypatch, SITE_DB_RELAY_PORT_NAME="sql-ps1")
        app.export()
    assert _keys(stack) == expected
