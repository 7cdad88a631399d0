"""Every ``cmremediate`` command against the local stack, through the same settings."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest
from typer.testing import CliRunner

from cmremediate_cli.main import app
from devstack.datagen import GeneratedStatusMessage
from shared.platform.retry import RetryPolicy
from tests.helpers import DEPENDENCY_CHECKS
from tests.remediation.conftest import FIXTURES, REPO

pytestmark = pytest.mark.stack
runner = CliRunner()


@pytest.fixture
def cli_env(make_remediation, remediation_settings, tmp_path, monkeypatch):
    """An app root with a fast host.json (retry after 1 s, poison after 2 tries), the
    settings as local.settings.json, and the scenario's status messages."""
    host = json.loads((REPO / "host.json").read_text())
    host["extensions"]["queues"].update(visibilityTimeout="00:00:01", maxDequeueCount=2)
    (tmp_path / "host.json").write_text(json.dumps(host))
    values = {**remediation_settings, "AzureWebJobsScriptRoot": str(tmp_path)}
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    remediation = make_remediation(AzureWebJobsScriptRoot=str(tmp_path))
    remediation.stack.site_db.insert_status_messages(
        [
            GeneratedStatusMessage(
                site_code="PS1",
                machine_name=name,
                time_utc=datetime(2026, 11, 20, 8, n),
                insertion_strings=("MsgType_Office365Upgrade", value),
            )
            for n, (name, value) in enumerate(
                [
                    ("PC-ADD01", "projectInstalled"),
                    ("PC-REIMAGED01", "visioInstalled"),
                    ("PC-AMBIG01", "projectInstalled"),
                    ("PC-MEMBER01", "projectInstalled"),
                ]
            )
        ]
    )
    return remediation, str(settings)


def run(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_run_once_status_and_outcomes(cli_env):
    remediation, settings = cli_env
    result = run("run-once", "--settings", settings, "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["export"]["enqueued"] == 4
    assert figures["process"]["outcomes"] == {"added": 2, "ambiguous": 1, "already-member": 1}
    assert remediation.adminservice.direct_members("PS100123") == {16777301, 16777302}

    status = json.loads(run("status", "--settings", settings, "--json").stdout)
    (site,) = status["sites"]
    assert site["site_code"] == "PS1" and site["caught_up"] is True
    assert site["lag_seconds"] == 0
    assert status["queue_depth"] == 0 and status["poison_depth"] == 0
    assert status["outcomes_24h"] == {"added": 2, "ambiguous": 1, "already-member": 1}
    table = run("status", "--settings", settings).output
    assert "caught up" in table and "already-member" in table

    found = json.loads(
        run("outcomes", "--settings", settings, "--machine", "pc-add01", "--json").output
    )
    assert [(o["kind"], o["resource_id"], o["collection_id"]) for o in found] == [
        ("added", 16777301, "PS100123")
    ]
    by_collection = json.loads(
        run("outcomes", "--settings", settings, "--collection", "ps100124", "--json").output
    )
    assert [o["machine_name"] for o in by_collection] == ["PC-REIMAGED01"]
    readable = run("outcomes", "--settings", settings, "--machine", "PC-AMBIG01").output
    assert "ambiguous" in readable and "PC-AMBIG01" in readable


def test_failures_go_to_poison_and_come_back(cli_env, runtime_overrides):
    remediation, settings = cli_env
    runtime_overrides(http_retry=RetryPolicy(attempts=2, max_backoff_seconds=0.05))
    assert run("export", "--settings", settings).exit_code == 0
    remediation.adminservice.storm(503, count=10_000)
    first = json.loads(run("process", "--settings", settings, "--json").stdout)
    # the ambiguous machine, and the member (v_FullCollectionMembership says so), need
    # no AdminService call; the two adds fail
    assert (first["failed"], first["poisoned"], first["outcomes"]) == (
        2,
        0,
        {"ambiguous": 1, "already-member": 1},
    )
    time.sleep(1.2)  # the host.json visibility timeout of this test
    second = json.loads(run("process", "--settings", settings, "--json").stdout)
    assert (second["failed"], second["poisoned"]) == (2, 2)  # maxDequeueCount 2 reached

    listed = json.loads(run("poison", "list", "--settings", settings, "--json").stdout)
    assert len(listed) == 2
    shown = json.loads(run("poison", "show", listed[0]["id"], "--settings", settings).stdout)
    assert json.loads(shown["body"])["machine_name"] in {"PC-ADD01", "PC-REIMAGED01"}
    assert "PC-" in run("poison", "list", "--settings", settings).stdout

    remediation.adminservice.clear_faults()
    assert "requeued 2 message" in run("poison", "requeue", "--all", "--settings", settings).stdout
    assert json.loads(run("poison", "list", "--settings", settings, "--json").stdout) == []
    drained = json.loads(run("process", "--settings", settings, "--json").stdout)
    assert drained["outcomes"] == {"added": 2}
    assert remediation.adminservice.direct_members("PS100124") == {16777306}
    assert run("poison", "requeue", "--settings", settings).exit_code == 2  # neither ID nor --all


def test_check_passes_on_a_healthy_stack(cli_env):
    _, settings = cli_env
    result = run("check", "--settings", settings)
    assert result.exit_code == 0, result.output
    for name in (*DEPENDENCY_CHECKS, "collection PS100126"):
        assert re.search(rf"ok\s+{name}", result.output), name


def _break(settings: str, **values: str) -> str:
    with open(settings) as handle:
        document = json.load(handle)
    document["Values"].update(values)
    path = settings.replace("local.settings.json", "broken.settings.json")
    with open(path, "w") as handle:
        json.dump(document, handle)
    return path


@pytest.mark.parametrize(
    ("broken", "failing", "hint"),
    [
        (
            {
                "SITE_DB_CONNECTION": "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=9;Database=x;Uid=u;Pwd=p;"
                "SSLmode=verify-full"
            },
            "site database",
            "check SITE_DB_CONNECTION",
        ),
        ({"ADMINSERVICE_PASSWORD": "wrong-password"}, "token", "ADMINSERVICE_USERNAME/PASSWORD"),
        (
            {"ADMINSERVICE_URL": "https://127.0.0.1:9/AdminService"},
            "AdminService",
            "check ADMINSERVICE_URL",
        ),
        (
            {
                "REMEDIATION_RULES_FILE": str(
                    FIXTURES.parent / "remediation-rules-missing-collection.json"
                )
            },
            "collection PS1000FF",
            "create the collection",
        ),
    ],
)
def test_check_names_each_broken_dependency_with_a_hint(
    cli_env, runtime_overrides, broken, failing, hint
):
    _, settings = cli_env
    runtime_overrides(site_db_retry=RetryPolicy(attempts=1), http_retry=RetryPolicy(attempts=1))
    result = run("check", "--settings", _break(settings, **broken))
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if f"FAIL {failing}" in line)
    assert line
    assert hint in result.output


def test_check_names_broken_storage(cli_env, runtime_overrides):
    _, settings = cli_env
    broken = _break(
        settings,
        AzureWebJobsStorage=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:9/devstoreaccount1"
        ),
    )
    runtime_overrides(storage_retries=0)
    result = run("check", "--settings", broken)
    assert result.exit_code == 1
    for failing, role in (
        ("storage queue", "Storage Queue Data Contributor"),
        ("storage blobs", "Storage Blob Data Owner"),
        ("storage tables", "Storage Table Data Contributor"),
    ):
        assert f"FAIL {failing}" in result.output
        assert role in result.output


def test_backfill_resends_without_moving_the_watermark_unless_asked(cli_env):
    remediation, settings = cli_env
    assert json.loads(run("export", "--settings", settings, "--json").stdout)["enqueued"] == 4
    before = remediation.runtime.watermarks.load("PS1")[0]
    remediation.stack.drain()

    again = json.loads(
        run("export", "--settings", settings, "--since", "2026-11-20T08:02:00", "--json").stdout
    )
    assert again["enqueued"] == 2  # the two messages from 08:02 on
    assert remediation.runtime.watermarks.load("PS1")[0] == before  # untouched
    assert {r.machine_name for r in remediation.stack.drain()} == {"PC-AMBIG01", "PC-MEMBER01"}

    ids = remediation.stack.site_db.insert_status_messages(
        [
            GeneratedStatusMessage(
                site_code="PS1",
                machine_name="PC-REMOVE01",
                time_utc=datetime(2026, 11, 20, 9, 0),
                insertion_strings=("MsgType_Office365Upgrade", "projectInstalled"),
            )
        ]
    )
    by_id = json.loads(
        run(
            "export",
            "--settings",
            settings,
            "--from-record-id",
            str(ids[0] - 1),
            "--site",
            "ps1",
            "--update-watermark",
            "--json",
        ).stdout
    )
    assert by_id["enqueued"] == 1
    assert [r.record_id for r in remediation.stack.drain()] == ids
    # the timer's next run does not send it a second time
    assert json.loads(run("export", "--settings", settings, "--json").stdout)["enqueued"] == 0
    assert (
        run("export", "--settings", settings, "--from-record-id", "5").exit_code == 2
    )  # no --site


def test_config_reference_command_prints_the_generated_reference():
    result = run("config-reference")
    assert result.exit_code == 0
    assert result.stdout == (REPO / "docs" / "configuration.md").read_text()


def test_a_plain_text_message_is_poisoned_and_requeue_repairs_it(cli_env, monkeypatch):
    """Another writer forgot TextBase64EncodePolicy: the host cannot bind such a message,
    so it ends in the poison queue; requeue sends it back base64-encoded."""
    remediation, settings = cli_env
    body = json.loads((FIXTURES / "01-add.json").read_text())["body"]
    raw = remediation.stack.raw_queue()
    raw.create_queue()
    raw.send_message(json.dumps(body))  # plain JSON, not base64
    for attempt in (1, 2):
        figures = json.loads(run("process", "--settings", settings, "--json").stdout)
        assert figures["failed"] == 1
        if attempt == 1:
            time.sleep(1.2)
    assert figures["poisoned"] == 1
    (listed,) = json.loads(run("poison", "list", "--settings", settings, "--json").stdout)
    assert "not base64" in listed["problem"]
    assert "requeued 1" in run("poison", "requeue", "--all", "--settings", settings).stdout
    drained = json.loads(run("process", "--settings", settings, "--json").stdout)
    assert drained["outcomes"] == {"added": 1}
    assert 16777301 in remediation.adminservice.direct_members("PS100123")
