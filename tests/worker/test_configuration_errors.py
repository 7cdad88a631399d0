"""What an operator reads when a setting is wrong, through the worker: health answers
503 naming it, and every timer and queue invocation fails naming it, each time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.functions_host import FunctionsHost
from shared.runtime import reset_runtime
from tests.conftest import FunctionApp
from tests.worker.test_indexing import GOOD

SETTING_NAMES = [
    "SITE_DB_CONNECTION",
    "AzureWebJobsStorage",
    "REMEDIATION_QUEUE",
    "EXPORT_SCHEDULE",
    "ADMINSERVICE_URL",
    "ENTRA_AUTHORITY_HOST",
    "ENTRA_TENANT_ID",
    "ENTRA_CLIENT_ID",
    "ADMINSERVICE_USERNAME",
    "ADMINSERVICE_PASSWORD",
    "REMEDIATION_RULES_FILE",
    "EXPORT_OVERLAP_MINUTES",
    "AzureWebJobsScriptRoot",
]

#: (settings, what the operator must read). Required settings missing, then malformed.
CASES = [
    pytest.param(
        {k: v for k, v in GOOD.items() if k != "SITE_DB_CONNECTION"},
        "SITE_DB_CONNECTION: required setting is missing",
        id="sitedb-missing",
    ),
    pytest.param(
        {k: v for k, v in GOOD.items() if k != "AzureWebJobsStorage"},
        "AzureWebJobsStorage: required setting is missing",
        id="storage-missing",
    ),
    pytest.param(
        {k: v for k, v in GOOD.items() if k != "ADMINSERVICE_PASSWORD"},
        "ADMINSERVICE_PASSWORD: required because a rule targets the AdminService",
        id="password-missing",
    ),
    pytest.param(
        {k: v for k, v in GOOD.items() if k != "ENTRA_TENANT_ID"},
        "ENTRA_TENANT_ID: required because a rule targets the AdminService",
        id="tenant-missing",
    ),
    pytest.param(
        {**GOOD, "SITE_DB_CONNECTION": GOOD["SITE_DB_CONNECTION"] + "TrustServerCertificate=yes"},
        "TrustServerCertificate",
        id="sitedb-trusts-any-certificate",
    ),
    pytest.param(
        {**GOOD, "EXPORT_OVERLAP_MINUTES": "soon"}, "EXPORT_OVERLAP_MINUTES", id="overlap-malformed"
    ),
    pytest.param(
        {**GOOD, "ADMINSERVICE_URL": "http://cmg.contoso.com/AdminService"},
        "ADMINSERVICE_URL",
        id="adminservice-not-https",
    ),
    pytest.param(
        {**GOOD, "REMEDIATION_RULES_FILE": "no-such-rules.json"},
        "REMEDIATION_RULES_FILE: ",
        id="rules-missing",
    ),
]


@pytest.fixture
def broken_app(
    functions_host: FunctionsHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FunctionApp]:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    reset_runtime()
    yield FunctionApp(functions_host)
    reset_runtime()


@pytest.mark.parametrize(("settings", "named"), CASES)
def test_health_and_every_invocation_name_the_problem(
    broken_app: FunctionApp, monkeypatch: pytest.MonkeyPatch, settings, named
):
    for name, value in settings.items():
        monkeypatch.setenv(name, value)

    response = broken_app.health()
    assert response.status == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert any(named in problem for problem in body["configuration"]), body["configuration"]
    assert "Pwd=p" not in response.body.decode()  # a connection string's secret stays out

    for _ in range(2):  # every invocation, not only the first
        timer = broken_app.export(check=False)
        assert not timer.ok
        assert timer.error is not None and timer.error.startswith("ConfigurationError: ")
        assert named in timer.error
        queued = broken_app.deliver('{"schema_version": 1}', check=False)
        assert not queued.ok
        assert queued.error is not None and named in queued.error


def test_every_problem_is_named_at_once(broken_app: FunctionApp, monkeypatch, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text('{"rules": [{"name": "x"}]}', encoding="utf-8")
    settings = {k: v for k, v in GOOD.items() if k != "SITE_DB_CONNECTION"}
    for name, value in {**settings, "REMEDIATION_RULES_FILE": str(rules)}.items():
        monkeypatch.setenv(name, value)
    problems = "\n".join(broken_app.health().json()["configuration"])
    assert "SITE_DB_CONNECTION" in problems
    assert "REMEDIATION_RULES_FILE" in problems  # the rules file, although a setting failed


def test_no_settings_at_all(broken_app: FunctionApp):
    response = broken_app.health()
    assert response.status == 503
    problems = "\n".join(response.json()["configuration"])
    assert "SITE_DB_CONNECTION" in problems and "AzureWebJobsStorage" in problems


def test_health_needs_the_function_key(broken_app: FunctionApp):
    assert broken_app.health(key="wrong").status == 401
