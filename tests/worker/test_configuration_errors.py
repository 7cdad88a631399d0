"""What an operator reads when a setting is wrong, through the worker: health answers
503 naming it, and every timer and queue invocation fails naming it, each time."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devstack.functions_host import FunctionInError, FunctionsHost
from shared.app.runtime import get_runtime, reset_runtime
from shared.platform.settings import SETTING_FIELDS
from tests.conftest import REPO, FunctionApp
from tests.helpers import rule, rules_text
from tests.worker.test_indexing import GOOD, without

#: (settings, what the operator must read). Required settings missing, then malformed.
CASES = [
    *[
        pytest.param(without(name), f"{name}: {reason}", id=f"{name}-missing")
        for name, reason in [
            ("SITE_DB_CONNECTION", "required setting is missing"),
            ("AzureWebJobsStorage", "required setting is missing"),
            ("ADMINSERVICE_PASSWORD", "required because a rule targets the AdminService"),
            ("ENTRA_TENANT_ID", "required because a rule targets the AdminService"),
        ]
    ],
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
    """No app setting in the environment but the app root; a fresh runtime."""
    names = {name.lower() for name in SETTING_FIELDS}
    for name in list(os.environ):
        if name.lower() in names or name.lower().startswith("azurewebjobsstorage"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AzureWebJobsScriptRoot", str(REPO))
    # The host's own binding settings, so that it runs the functions (tested apart).
    monkeypatch.setenv("EXPORT_SCHEDULE", GOOD["EXPORT_SCHEDULE"])
    monkeypatch.setenv("REMEDIATION_QUEUE", GOOD["REMEDIATION_QUEUE"])
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
    settings = without("SITE_DB_CONNECTION")
    for name, value in {**settings, "REMEDIATION_RULES_FILE": str(rules)}.items():
        monkeypatch.setenv(name, value)
    problems = "\n".join(broken_app.health().json()["configuration"])
    assert "SITE_DB_CONNECTION" in problems
    assert "REMEDIATION_RULES_FILE" in problems  # the rules file, although a setting failed


def test_no_settings_at_all(broken_app: FunctionApp, monkeypatch):
    monkeypatch.delenv("EXPORT_SCHEDULE")
    monkeypatch.delenv("REMEDIATION_QUEUE")
    response = broken_app.health()
    assert response.status == 503
    problems = "\n".join(response.json()["configuration"])
    assert "SITE_DB_CONNECTION" in problems and "AzureWebJobsStorage" in problems
    assert "EXPORT_SCHEDULE: not set" in problems and "REMEDIATION_QUEUE: not set" in problems


def test_health_needs_the_function_key(broken_app: FunctionApp):
    assert broken_app.health(key="wrong").status == 401


def test_health_lists_each_problem_once_in_order_with_the_fix(
    broken_app: FunctionApp, monkeypatch, tmp_path
):
    rules = tmp_path / "rules.json"
    rules.write_text(rules_text(rule(collection_id="SMS00001")))
    monkeypatch.setenv("REMEDIATION_RULES_FILE", str(rules))
    monkeypatch.setenv("EXPORT_OVERLAP_MINUTES", "soon")
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    response = broken_app.health()
    assert response.status == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["figures"] is None
    problems = body["configuration"]
    assert [p.split(":")[0] for p in problems] == [
        "SITE_DB_CONNECTION",
        "EXPORT_OVERLAP_MINUTES",
        f"REMEDIATION_RULES_FILE {rules}",
    ]
    assert "'SMS00001' is a built-in collection" in problems[2]
    [check] = body["checks"]
    assert check["name"] == "settings and rules" and not check["ok"]
    assert all(problem in check["detail"] for problem in problems)
    assert "poison" in check["hint"]


def test_invocations_name_every_problem(broken_app: FunctionApp, monkeypatch):
    monkeypatch.setenv("SITE_DB_CONNECTION", "sql01")
    for invocation in (broken_app.export(check=False), broken_app.deliver("{}", check=False)):
        assert invocation.error is not None
        assert invocation.error.startswith(
            "ConfigurationError: invalid settings:\n  SITE_DB_CONNECTION: is not an ODBC connection"
        )
        assert "AzureWebJobsStorage: required" in invocation.error
        assert "ADMINSERVICE_URL: required because" in invocation.error


def test_fixing_the_configuration_is_enough(broken_app: FunctionApp, monkeypatch):
    assert not broken_app.export(check=False).ok
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    runtime = get_runtime()  # touches no network: nothing listens on these settings
    assert get_runtime() is runtime
    assert len(runtime.rules.rules) == 3
    assert broken_app.health(timeout=30).json()["configuration"] == []


@pytest.mark.parametrize("name", ["EXPORT_SCHEDULE", "REMEDIATION_QUEUE"])
def test_an_unset_binding_setting_is_named_although_the_app_has_a_default(
    broken_app: FunctionApp, monkeypatch, name
):
    for setting, value in GOOD.items():
        monkeypatch.setenv(setting, value)
    monkeypatch.delenv(name)
    response = broken_app.health(timeout=30)
    assert response.status == 503
    body = response.json()
    [problem] = body["configuration"]
    assert problem.startswith(f"{name}: not set; the Functions host resolves %{name}%")
    check = next(c for c in body["checks"] if c["name"] == "function bindings")
    assert not check["ok"] and check["detail"] == problem
    if name == "EXPORT_SCHEDULE":  # the host never runs a function in error
        with pytest.raises(FunctionInError, match="'%EXPORT_SCHEDULE%' does not resolve"):
            broken_app.export()
