"""The remediation stack: the export's stack plus the Entra ID and AdminService
simulators, the fixture scenario loaded into both the site database and the
simulator, and the real queue function."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from devstack.adminservice import AdminServiceSimulator, StatusMessageReader
from devstack.entra import EntraSimulator
from devstack.functions_host import FunctionsHost
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from shared.app.runtime import (
    Runtime,
    install_runtime,
    process_overrides,
    reset_runtime,
)
from shared.domain.outcomes import Outcome
from shared.domain.requests import RemediationRequest
from shared.platform.retry import RetryPolicy
from tests.conftest import FunctionApp, InvocationFailed, Stack
from tests.remediation import scenario

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "queue"
REPO = Path(__file__).resolve().parents[2]
ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))


@pytest.fixture
def adminservice(
    local_ca: LocalCA, entra: EntraSimulator, site_db: SiteDatabase
) -> Iterator[AdminServiceSimulator]:
    """A fresh AdminService per test, holding the fixture scenario."""
    with AdminServiceSimulator(
        local_ca,
        jwks_uri=entra.jwks_uri,
        # The ConfigMgr server app gets v1.0 access tokens (Entra's default for an API).
        issuer=entra.issuer_v1,
        admins=[scenario.SERVICE_ACCOUNT],
        devices=scenario.DEVICES,
        collections=scenario.COLLECTIONS,
        status_messages=StatusMessageReader.for_site_database(site_db),
        # v_FullCollectionMembership follows the collections, as the site evaluates them
        site_database=site_db,
        # ASP.NET OData's default MaxNodeCount: the app's batched filters stay within it
        max_filter_nodes=100,
    ) as simulator:
        for collection_id, members in scenario.INITIAL_MEMBERS.items():
            simulator.set_direct_members(collection_id, members)
        yield simulator


def fixture(name: str) -> dict[str, Any]:
    """A queue fixture by file name (without .json)."""
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return document


def body_of(document: dict[str, Any]) -> str:
    body = document["body"]
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


def webservice_rules(directory: Path) -> str:
    """The fixture rules, every one aimed at the web service: the file's path."""
    document = json.loads((FIXTURES.parent / "remediation-rules.json").read_text(encoding="utf-8"))
    for rule in document["rules"]:
        rule["target"] = "webservice"
    path = directory / "webservice-rules.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


@dataclass
class Remediation:
    """The queue function on the full local stack, with the fixture scenario loaded."""

    stack: Stack
    entra: EntraSimulator
    adminservice: AdminServiceSimulator
    app: FunctionApp
    runtime: Runtime

    def deliver(
        self, body: str | bytes, *, message_id: str = "m-1", dequeue_count: int = 1
    ) -> None:
        """Deliver a (base64-decoded) queue message to ``apply_remediation`` through the
        worker, as the host does; raises :class:`InvocationFailed` when it fails."""
        self.app.deliver(body, message_id=message_id, dequeue_count=dequeue_count)

    def deliver_like_host(self, body: str | bytes, *, message_id: str, attempts: int = 5) -> int:
        """Deliver, and deliver again after a failure, as the host does up to
        maxDequeueCount. Returns the failed attempts."""
        for attempt in range(1, attempts + 1):
            try:
                self.deliver(body, message_id=message_id, dequeue_count=attempt)
                return attempt - 1
            except InvocationFailed:
                if attempt == attempts:
                    raise
        return attempts

    def outcome(self, request: RemediationRequest | dict[str, Any]) -> Outcome | None:
        """The outcome recorded for a request (a model or a fixture body)."""
        if isinstance(request, dict):
            request = RemediationRequest.model_validate(request)
        return self.runtime.audit.find(request, dry_run=self.runtime.settings.dry_run)

    def capture_tokens(self) -> list[str]:
        """Every access token Entra ID hands the app from now on (read off the wire)."""
        issued: list[str] = []

        def grab(response: Any, *args: Any, **kwargs: Any) -> None:
            if response.url.endswith("/oauth2/v2.0/token") and response.ok:
                issued.append(response.json()["access_token"])

        self.runtime.http.hooks["response"].append(grab)
        return issued

    def requeued(self) -> list[RemediationRequest]:
        """Requests put back on the queue for a later try (taken off the queue)."""
        client = self.stack.raw_queue()
        found: list[RemediationRequest] = []
        with client:
            for message in client.receive_messages(messages_per_page=32, visibility_timeout=60):
                found.append(
                    RemediationRequest.model_validate_json(base64.b64decode(message.content))
                )
                client.delete_message(message)
        return found


@pytest.fixture
def remediation_settings(
    stack: Stack, local_ca: LocalCA, entra: EntraSimulator, adminservice: AdminServiceSimulator
) -> dict[str, str]:
    """App settings that point the app at the simulators."""
    return stack.settings_values(
        ADMINSERVICE_URL=adminservice.cmg_url,
        ENTRA_AUTHORITY_HOST=entra.authority_host,
        ENTRA_TENANT_ID=entra.tenant_id,
        ENTRA_CLIENT_ID=scenario.CLIENT_ID,
        ADMINSERVICE_USERNAME=scenario.SERVICE_ACCOUNT,
        ADMINSERVICE_PASSWORD=scenario.SERVICE_PASSWORD,
        TLS_CA_BUNDLE=str(local_ca.bundle_path),
        REMEDIATION_RULES_FILE=str(FIXTURES.parent / "remediation-rules.json"),
        RESOLVE_RETRY_DELAY_SECONDS="1",
        EXPORT_SCHEDULE="0 */5 * * * *",
    )


@pytest.fixture
def make_remediation(
    stack: Stack,
    entra: EntraSimulator,
    adminservice: AdminServiceSimulator,
    remediation_settings: dict[str, str],
    functions_host: FunctionsHost,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Remediation]]:
    """Build the remediation app with extra settings: scenario loaded, environment set,
    and the runtime the functions will use, with the fixed clock."""
    stack.site_db.insert_devices(scenario.DEVICES)

    def make(**overrides: str) -> Remediation:
        for name, value in {**remediation_settings, **overrides}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AzureWebJobsScriptRoot", str(REPO))
        runtime = install_fixed_clock_runtime()
        return Remediation(stack, entra, adminservice, FunctionApp(functions_host), runtime)

    yield make
    reset_runtime()


@pytest.fixture
def remediation(
    make_remediation: Callable[..., Remediation], request: pytest.FixtureRequest
) -> Remediation:
    """The remediation app on the fixture scenario (``indirect`` params: extra settings)."""
    return make_remediation(**getattr(request, "param", {}))


def install_fixed_clock_runtime() -> Runtime:
    """A runtime from the environment on the scenario's fixed clock, installed as the one
    the functions use."""
    runtime = Runtime.from_environment(
        overrides=replace(process_overrides(), clock=lambda: scenario.FIXED_NOW)
    )
    install_runtime(runtime)
    return runtime


@pytest.fixture
def one_http_attempt(runtime_overrides: Callable[..., None]) -> None:
    """The AdminService and web services fail at their first error, without backoff."""
    runtime_overrides(http_retry=RetryPolicy(attempts=1))
