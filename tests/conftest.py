"""Shared fixtures: the local stack (PostgreSQL through ODBC, Azurite), started once
per test session, and a fresh queue and database content for every test."""

from __future__ import annotations

import base64
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pyodbc
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from devstack.adminservice import AdminServiceSimulator
from devstack.azurite import Azurite
from devstack.entra import EntraSimulator
from devstack.functions_host import FunctionsHost, HttpResult, Invocation, QueueDelivery
from devstack.queue_host import QueueTriggerListener
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from shared.app.runtime import (
    Runtime,
    process_overrides,
    quiet_sdk_logs,
    reset_runtime,
    use_overrides,
)
from shared.domain.ports import ProgressStore, SiteLease
from shared.domain.requests import RemediationRequest, decode
from shared.domain.rules import RuleSet
from shared.export import site_database
from shared.export.exporter import Exporter
from shared.export.watermark import SiteWatermark
from shared.platform.settings import load_settings
from shared.platform.storage import approximate_depth
from shared.queue.options import QueueOptions
from tests.helpers import UNREACHABLE_ADMINSERVICE, own_loopback


@pytest.fixture(scope="session", autouse=True)
def _quiet_sdk_logs() -> None:
    quiet_sdk_logs()


@pytest.fixture(scope="session")
def site_db() -> Iterator[SiteDatabase]:
    with SiteDatabase() as database:
        yield database


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    # The log folder outlives the run, so a failure can be diagnosed.
    with Azurite(log_dir=tmp_path_factory.mktemp("azurite-log")) as server:
        yield server


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """The CA of every suite's HTTPS simulators; the app trusts its bundle."""
    return LocalCA(tmp_path_factory.mktemp("ca"))


class StoreWrapper:
    """A test's progress store: the real one, with some behaviour replaced by a subclass."""

    def __init__(self, store: ProgressStore[SiteWatermark]) -> None:
        self.store = store

    def lock(self, site_code: str) -> SiteLease | None:
        """The real site lease."""
        return self.store.lock(site_code)

    def load(self, site_code: str) -> tuple[SiteWatermark | None, str | None]:
        """The saved state."""
        return self.store.load(site_code)

    def save_merged(
        self, state: SiteWatermark, etag: str | None, overlap: timedelta
    ) -> tuple[SiteWatermark, str]:
        """The real ETag-merging save."""
        return self.store.save_merged(state, etag, overlap)


#: Seconds a drained message stays hidden: a batch lost to a retried receive returns then.
DRAIN_HIDE = 60


@dataclass
class Stack:
    """One test's view of the local stack: its own queue, state container and rows."""

    site_db: SiteDatabase
    azurite: Azurite
    queue_name: str
    runtimes: list[Runtime] = field(default_factory=list)
    #: Settings of the status message source (``export_source``); None removes one.
    source_settings: dict[str, str | None] = field(default_factory=dict)
    #: The AdminService simulator serving the status messages (``adminservice`` source).
    adminservice: AdminServiceSimulator | None = None

    def settings_values(self, **overrides: str) -> dict[str, str]:
        """App settings pointing at the stack, as the function app would get them."""
        values = {
            "SITE_DB_CONNECTION": self.site_db.reader_connection_string,
            "AzureWebJobsStorage": self.azurite.connection_string,
            "REMEDIATION_QUEUE": self.queue_name,
            **UNREACHABLE_ADMINSERVICE,
        }
        for name, value in self.source_settings.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        return {**values, **overrides}

    def runtime(self, rules: RuleSet | None = None, **overrides: str) -> Runtime:
        """A runtime built the way the app builds it; closed at teardown."""
        runtime = Runtime(load_settings(self.settings_values(**overrides)), rules)
        self.runtimes.append(runtime)
        return runtime

    def exporter(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        runtime: Runtime | None = None,
        progress_store: ProgressStore[SiteWatermark] | None = None,
        **options: Any,
    ) -> Exporter:
        """An exporter on a (new) runtime, with ExportOptions overridden by ``options``
        (and another progress store, a test's wrapper of the real one)."""
        runtime = runtime or self.runtime()
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs["clock"] = clock
        return Exporter(
            status_source=runtime.status_source,
            request_sender=runtime.request_sender,
            progress_store=progress_store or runtime.progress_store,
            rules=runtime.rules,
            options=replace(runtime.export_options(), **options),
            **kwargs,
        )

    def raw_queue(self) -> QueueClient:
        """The queue without any decode policy: what really lies in the storage service."""
        return QueueClient.from_connection_string(self.azurite.connection_string, self.queue_name)

    def drain(self) -> list[RemediationRequest]:
        """Take every queue message off the queue, checking each is base64 JSON."""
        client = self.raw_queue()
        seen: dict[str, RemediationRequest] = {}
        # The storage SDK sends a message again when the answer to its first send timed
        # out (a stalled Azurite under load), so the queue may hold the same bytes twice:
        # that is one send (at-least-once; the remediation side takes it once). A second
        # export of the same record differs in exported_utc and is counted.
        bodies: set[str] = set()
        ids: set[str] = set()
        waited = False
        try:
            try:
                client.get_queue_properties()
            except ResourceNotFoundError:
                return []  # nothing was ever enqueued
            while True:
                # Received messages stay invisible for a while, so the next receive returns
                # new ones; one clear at the end is far faster than a delete per message
                # on Azurite.
                batch = list(
                    client.receive_messages(
                        messages_per_page=32, max_messages=32, visibility_timeout=DRAIN_HIDE
                    )
                )
                for message in batch:
                    text = base64.b64decode(message.content, validate=True).decode("utf-8")
                    if text not in bodies:
                        seen[str(message.id)] = decode(text)
                    bodies.add(text)
                    ids.add(str(message.id))
                if batch:
                    continue
                # A receive the SDK retried (a slow answer under load) may have hidden a
                # batch whose answer never arrived: the queue still counts those; they
                # come back once their visibility timeout ends.
                if waited or approximate_depth(client) <= len(ids):
                    break
                time.sleep(DRAIN_HIDE)  # once, so a drain always ends: a lost batch is back
                waited = True
            client.clear_messages()
            return list(seen.values())
        finally:
            client.close()

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.close()


class OdbcTripwire:
    """Stands in for the app's ``pyodbc`` module: every attribute is the real one but
    ``connect``, which records the attempt and fails (the simulators keep their own)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(pyodbc, name)

    def connect(self, *args: Any, **kwargs: Any) -> NoReturn:
        self.attempts.append("".join(traceback.format_stack(limit=8)))
        raise AssertionError("the app opened an ODBC connection where it must not")


@pytest.fixture
def no_odbc(monkeypatch: pytest.MonkeyPatch) -> Iterator[OdbcTripwire]:
    """The app's only ODBC path (the site database reader) fails the test if used."""
    tripwire = OdbcTripwire()
    monkeypatch.setattr(site_database, "pyodbc", tripwire)
    yield tripwire
    assert tripwire.attempts == [], tripwire.attempts[0]


@pytest.fixture
def stack(site_db: SiteDatabase, azurite: Azurite) -> Iterator[Stack]:
    site_db.reset()
    harness = Stack(site_db, azurite, queue_name=f"t{uuid.uuid4().hex[:12]}-remediation")
    try:
        yield harness
    finally:
        harness.close()


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def functions_host() -> Iterator[FunctionsHost]:
    """The app indexed once by Microsoft's worker library, as a worker process does.

    Settings are read on first use, not at indexing, so every test's environment
    applies to this one host (``reset_runtime`` between tests)."""
    with FunctionsHost(REPO) as host:
        yield host


class InvocationFailed(Exception):
    """A function invocation failed; ``str()`` is ``"<Type>: <message>"`` as the host
    logs it."""

    def __init__(self, invocation: Invocation) -> None:
        super().__init__(invocation.error)
        self.invocation = invocation
        self.type_name = (invocation.error or "").partition(":")[0]


def checked(invocation: Invocation) -> Invocation:
    """The invocation, or InvocationFailed ("<Type>: <message>") when it failed."""
    if not invocation.ok:
        raise InvocationFailed(invocation)
    return invocation


@dataclass
class FunctionApp:
    """The app's functions as the Functions host runs them: through the worker."""

    host: FunctionsHost

    def export(self, *, past_due: bool = False, check: bool = True) -> Invocation:
        """One tick of ``export_status_messages``."""
        invocation = self.host.call_timer("export_status_messages", past_due=past_due)
        return checked(invocation) if check else invocation

    def deliver(
        self,
        body: str | bytes,
        *,
        message_id: str = "m-1",
        dequeue_count: int = 1,
        check: bool = True,
    ) -> Invocation:
        """One delivery of a (decoded) queue message to ``apply_remediation``."""
        now = datetime.now(UTC)
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        delivery = QueueDelivery(
            id=message_id,
            pop_receipt=f"pop-{uuid.uuid4().hex[:8]}",
            body=text,
            dequeue_count=dequeue_count,
            inserted_on=now,
            expires_on=now + timedelta(days=7),
            next_visible_on=now + timedelta(minutes=10),
        )
        invocation = self.host.queue_invocation("apply_remediation", delivery).result()
        return checked(invocation) if check else invocation

    def listener(self, **options: Any) -> QueueTriggerListener:
        """The host's queue listener for ``apply_remediation`` (host.json, ``options``
        replacing some of it)."""
        base = QueueOptions.from_host_json(self.host.script_root)
        return QueueTriggerListener(
            self.host, "apply_remediation", options=replace(base, **options)
        )

    def health(self, *, key: str | None = None, timeout: float = 60) -> HttpResult:
        """``GET /api/health`` with the function key."""
        return self.host.call_http(
            "GET",
            "/api/health",
            headers={"x-functions-key": key or self.host.function_key},
            timeout=timeout,
        )


@pytest.fixture
def app_environment(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stack's app settings in the environment, as the host sets them; a fresh runtime."""
    for name, value in stack.settings_values(EXPORT_SCHEDULE="0 */5 * * * *").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AzureWebJobsScriptRoot", str(REPO))
    reset_runtime()
    yield
    reset_runtime()


@pytest.fixture
def app(app_environment: None, functions_host: FunctionsHost) -> FunctionApp:
    """The functions, through the worker, on this test's stack."""
    return FunctionApp(functions_host)


@pytest.fixture
def runtime_overrides() -> Iterator[Callable[..., None]]:
    """``runtime_overrides(field=value, ...)``: every runtime built from the environment
    from then on (the functions' and the command line's) uses these ``Overrides``
    fields too; the process's overrides are restored after the test. Request it before
    a fixture that builds the functions' runtime."""
    before = process_overrides()

    def apply(**fields: Any) -> None:
        use_overrides(replace(process_overrides(), **fields))

    yield apply
    use_overrides(before)


@pytest.fixture(scope="session")
def entra(local_ca: LocalCA) -> Iterator[EntraSimulator]:
    """Entra ID with the scenario's service account, client app and ConfigMgr API."""
    from tests.remediation import scenario

    with EntraSimulator(local_ca, host=own_loopback(0)) as simulator:
        simulator.add_user(scenario.SERVICE_ACCOUNT, scenario.SERVICE_PASSWORD)
        simulator.add_client(scenario.CLIENT_ID, public=True)
        simulator.add_api("https://ConfigMgrService", scopes=("user_impersonation",))
        yield simulator
