"""Indexing through Microsoft's worker library, each in a fresh interpreter as a new
worker process starts: the app indexes whatever the settings, with its four functions
and their bindings, because nothing is validated at import."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from devstack.worker_index import IndexReport, index_in_fresh_process
from tests.helpers import UNREACHABLE_ADMINSERVICE

REPO = Path(__file__).resolve().parents[2]

#: What the host must see: name → bindings, exactly.
EXPECTED_BINDINGS = {
    "export_status_messages": [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "%EXPORT_SCHEDULE%",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ],
    "expire_memberships": [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "0 30 3 * * *",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ],
    "apply_remediation": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "message",
            "queueName": "%REMEDIATION_QUEUE%",
            "connection": "AzureWebJobsStorage",
        }
    ],
    "health": [
        {
            "direction": "IN",
            "type": "httpTrigger",
            "name": "req",
            "methods": ["GET"],
            "authLevel": "FUNCTION",
            "route": "health",
        },
        {"direction": "OUT", "type": "http", "name": "$return"},
    ],
}

#: Settings that are complete and valid (nothing needs to be reachable to index).
GOOD = {
    "SITE_DB_CONNECTION": (
        "Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;Database=CM_PS1;"
        "Uid=u;Pwd=p;Encrypt=yes"
    ),
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "REMEDIATION_QUEUE": "cm-remediation",
    "EXPORT_SCHEDULE": "0 */5 * * * *",
    **UNREACHABLE_ADMINSERVICE,
}


def without(name: str) -> dict[str, str]:
    """:data:`GOOD` with ``name`` missing."""
    return {k: v for k, v in GOOD.items() if k != name}


def example_settings() -> dict[str, str]:
    """The Values of local.settings.json.example, as a user copies them."""
    document = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))
    values: dict[str, str] = document["Values"]
    return values


def index(environ: dict[str, str]) -> IndexReport:
    base = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TZ")}
    return index_in_fresh_process({**base, **environ})


def assert_indexed(report: IndexReport) -> None:
    assert report.error is None
    assert report.functions == EXPECTED_BINDINGS


def test_the_example_settings_index_all_four_functions_with_their_bindings():
    assert_indexed(index(example_settings()))


def test_no_settings_at_all_still_index_all_four_functions():
    assert_indexed(index({}))


BROKEN = [
    *[pytest.param(without(name), id=f"{name}-missing") for name in GOOD],
    pytest.param({**GOOD, "SITE_DB_CONNECTION": "Server=sql01;Encrypt=no"}, id="sitedb-no-tls"),
    pytest.param({**GOOD, "REMEDIATION_QUEUE": "Not_A_Queue"}, id="queue-name"),
    pytest.param({**GOOD, "EXPORT_OVERLAP_MINUTES": "soon"}, id="overlap"),
    pytest.param({**GOOD, "ADMINSERVICE_URL": "http://cmg/AdminService"}, id="adminservice-http"),
    pytest.param({**GOOD, "REMEDIATION_RULES_FILE": "no-such-rules.json"}, id="rules-missing"),
]


@pytest.mark.parametrize("environ", BROKEN)
def test_a_broken_setting_never_hides_the_functions(environ):
    assert_indexed(index(environ))


def test_the_worker_names_the_function_it_refuses(tmp_path):
    """The failure issue 10 found, reproduced on a copy of the app: a parameter that is
    not a binding fails the whole app, as on Azure."""
    for name in ("function_app.py", "host.json", "rules.json"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / "triggers").mkdir()
    for path in (REPO / "triggers").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == "health.py":
            text = text.replace("def health(req:", "def health(request:")
            assert "def health(request:" in text
        (tmp_path / "triggers" / path.name).write_text(text, encoding="utf-8")
    report = index_in_fresh_process(
        {k: v for k, v in os.environ.items() if k in ("HOME", "LANG")}, script_root=tmp_path
    )
    assert report.functions == {}
    assert report.error is not None
    assert "cannot load the health function" in report.error
    assert "{'request'}" in report.error
