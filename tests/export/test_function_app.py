"""The function app as the Functions host sees it: indexing, bindings, start-up
validation, and the timer function itself run against the local stack."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from devstack.datagen import GeneratedStatusMessage
from tests.helpers import UNREACHABLE_ADMINSERVICE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def function_app(app_environment):
    return importlib.import_module("function_app")


def test_app_indexes_both_functions_with_their_bindings(function_app):
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    assert set(functions) == {"export_status_messages", "apply_remediation", "health"}
    health_bindings = json.loads(functions["health"].get_function_json())["bindings"]
    trigger = next(b for b in health_bindings if b["type"] == "httpTrigger")
    assert trigger["methods"] == ["GET"]
    assert trigger["authLevel"] == "FUNCTION"
    assert trigger["route"] == "health"
    queue_bindings = json.loads(functions["apply_remediation"].get_function_json())["bindings"]
    assert queue_bindings == [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "message",
            "queueName": "%REMEDIATION_QUEUE%",
            "connection": "AzureWebJobsStorage",
        }
    ]
    bindings = json.loads(functions["export_status_messages"].get_function_json())["bindings"]
    assert bindings == [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "%EXPORT_SCHEDULE%",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ]


@pytest.mark.stack
def test_timer_function_exports_through_the_real_trigger(timer_function, stack):
    messages = [
        GeneratedStatusMessage(
            site_code="PS1",
            machine_name=f"PC{n:02}",
            time_utc=datetime(2026, 11, 20, 9, n),
            insertion_strings=("MsgType_Office365Upgrade", value),
        )
        for n, value in enumerate(
            ["projectInstalled", "visioInstalled", "roomPluginInstalled", "nothing"]
        )
    ]
    ids = stack.site_db.insert_status_messages(messages)
    timer_function(TimerRequest(past_due=True))
    got = Counter((r.record_id, r.rule, r.collection_id) for r in stack.drain())
    assert got == Counter(
        {
            (ids[0], "project-64bit-reinstall", "PS100123"): 1,
            (ids[1], "visio-64bit-reinstall", "PS100124"): 1,
            (ids[2], "outlook-room-plugin-reinstall", "PS100125"): 1,
        }
    )
    timer_function(TimerRequest(past_due=False))
    assert stack.drain() == []


def start_app(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import function_app in a fresh interpreter, as the worker does at start."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "SITE_DB_CONNECTION",
            "AzureWebJobsStorage",
            "REMEDIATION_QUEUE",
            "EXPORT_SCHEDULE",
            "REMEDIATION_RULES_FILE",
            "EXPORT_START_TIME",
            "EXPORT_OVERLAP_MINUTES",
            "EXPORT_MAX_MESSAGES_PER_RUN",
            "AzureWebJobsScriptRoot",
        }
    }
    env.update(environment)
    return subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


GOOD = {
    "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;Uid=u;Pwd=p",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    **UNREACHABLE_ADMINSERVICE,
}


def test_app_starts_with_good_settings():
    result = start_app(GOOD)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        (
            {"AzureWebJobsStorage": "UseDevelopmentStorage=true"},
            "SITE_DB_CONNECTION: required setting is missing",
        ),
        ({**GOOD, "EXPORT_OVERLAP_MINUTES": "soon"}, "EXPORT_OVERLAP_MINUTES"),
        ({**GOOD, "REMEDIATION_RULES_FILE": "no-such-rules.json"}, "REMEDIATION_RULES_FILE: "),
    ],
)
def test_app_refuses_to_start_naming_the_problem(environment, named):
    result = start_app(environment)
    assert result.returncode != 0
    assert named in result.stderr


def test_app_refuses_a_malformed_rules_file(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(
        '{"rules": [{"name": "x", "match": {"InsertionString1": "a"}, '
        '"collection_id": "SMS00001", "action": "add", "target": "adminservice"}]}'
    )
    result = start_app({**GOOD, "REMEDIATION_RULES_FILE": str(rules)})
    assert result.returncode != 0
    assert "collection_id: 'SMS00001' is a built-in collection" in result.stderr


def test_core_never_imports_azure_functions():
    offenders = [
        path.relative_to(REPO)
        for path in (REPO / "shared").rglob("*.py")
        if re.search(
            r"^\s*(import azure\.functions|from azure\.functions|from azure import functions)",
            path.read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    ]
    assert offenders == []
