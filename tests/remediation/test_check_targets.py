"""``cmremediate check`` looks at what the AdminService rules' collections carry:
required and task sequence deployments, maintenance windows, a limiting collection
other than All Systems. Warnings: printed with the rule and the collection, in the
JSON, never a failure; read with a number of requests that does not grow with the
rules."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cmremediate_cli.main import app
from devstack.adminservice import AdminServiceSimulator
from devstack.adminservice.targeting import (
    AVAILABLE,
    BASELINE,
    PROGRAM,
    SOFTWARE_UPDATE,
    SOFTWARE_UPDATES,
    TASK_SEQUENCE,
)
from shared.platform.retry import RetryPolicy
from tests.helpers import DEPENDENCY_CHECKS, rule, rules_text
from tests.remediation import scenario
from tests.remediation.conftest import FIXTURES, REPO

pytestmark = pytest.mark.stack
runner = CliRunner()

#: The rules of the shipped fixture: name -> collection.
RULES = {
    "project-64bit-reinstall": "PS100123",
    "visio-64bit-reinstall": "PS100124",
    "outlook-room-plugin-reinstall": "PS100125",
    "project-64bit-cleanup": "PS100126",  # the one that removes
}

Check = Callable[..., tuple[Result, list[str]]]


@pytest.fixture
def check(
    remediation_settings: dict[str, str], adminservice: AdminServiceSimulator, tmp_path: Path
) -> Check:
    """``check(rules_file=None, *options)``: run ``cmremediate check`` on the stack; the
    result and the AdminService routes it asked, in order."""

    def run(*options: str, rules_file: str | None = None) -> tuple[Result, list[str]]:
        values = {**remediation_settings, "AzureWebJobsScriptRoot": str(REPO)}
        if rules_file is not None:
            values["REMEDIATION_RULES_FILE"] = rules_file
        settings = tmp_path / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        adminservice.reset_calls()
        result = runner.invoke(app, ["check", "--settings", str(settings), *options])
        return result, [call.route or call.path for call in adminservice.calls]

    return run


def warnings_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warn ")]


def assert_each_names_its_rule(lines: list[str]) -> None:
    for line in lines:
        assert any(f"rule '{name}' ({cid}):" in line for name, cid in RULES.items()), line


def test_clean_collections_give_no_warning(check: Check) -> None:
    result, routes = check()
    assert result.exit_code == 0, result.output
    for name in (*DEPENDENCY_CHECKS, *(f"collection {cid}" for cid in RULES.values())):
        assert re.search(rf"ok\s+{name}", result.output), name
    assert warnings_of(result.output) == []
    # $metadata, then one query of the collections and one of their deployments
    assert Counter(routes) == {"metadata": 1, "SMS_Collection": 1, "SMS_DeploymentSummary": 1}

    document, _ = check("--json")
    assert document.exit_code == 0
    checks = json.loads(document.stdout)
    assert all(c["warnings"] == [] for c in checks)


def test_required_and_task_sequence_deployments_are_named(
    check: Check, adminservice: AdminServiceSimulator
) -> None:
    adminservice.add_deployment("PS100123", "Microsoft Project [64-bit]")  # required app
    adminservice.add_deployment("PS100123", "Project add-in", intent=AVAILABLE)  # nothing
    adminservice.add_deployment("PS100123", "Compliance", feature_type=BASELINE)  # nothing
    adminservice.add_deployment("PS100124", "2026-11 updates", feature_type=SOFTWARE_UPDATE)
    adminservice.add_deployment(
        "PS100124", "Visio setup", feature_type=PROGRAM, intent=3, program="Install"
    )
    adminservice.add_deployment(
        "PS100125", "Windows 11 upgrade", feature_type=TASK_SEQUENCE, intent=AVAILABLE
    )

    result, routes = check()
    assert result.exit_code == 0, result.output  # warnings do not fail the check
    lines = warnings_of(result.output)
    assert lines == [
        "warn rule 'project-64bit-reinstall' (PS100123): required application deployment "
        "'Microsoft Project [64-bit]': devices added get it",
        "warn rule 'visio-64bit-reinstall' (PS100124): required software update deployment "
        "'2026-11 updates': devices added get it",
        "warn rule 'visio-64bit-reinstall' (PS100124): DeploymentIntent 3 (unknown: as required) "
        "program deployment 'Visio setup' ('Install'): devices added get it",
        "warn rule 'outlook-room-plugin-reinstall' (PS100125): available task sequence "
        "deployment 'Windows 11 upgrade': is this a plain remediation collection?",
    ]
    assert_each_names_its_rule(lines)
    assert re.search(r"ok\s+collection PS100123: PS100123 exists", result.output)
    assert Counter(routes)["SMS_DeploymentSummary"] == 1

    document, _ = check("--json")
    assert document.exit_code == 0
    by_name = {c["name"]: c for c in json.loads(document.stdout)}
    assert by_name["collection PS100123"]["ok"] is True
    assert by_name["collection PS100123"]["warnings"] == [lines[0].removeprefix("warn ")]
    assert len(by_name["collection PS100124"]["warnings"]) == 2
    assert by_name["collection PS100126"]["warnings"] == []


def test_maintenance_windows_are_named(check: Check, adminservice: AdminServiceSimulator) -> None:
    adminservice.add_service_window("PS100124", "Weekend")
    adminservice.add_service_window("PS100124", "Patch night", window_type=SOFTWARE_UPDATES)
    adminservice.add_service_window("PS100124", "Old window", enabled=False)
    adminservice.add_service_window("PS100125", "Disabled only", enabled=False)
    adminservice.add_collection_settings("PS100126")  # settings, no window

    result, routes = check()
    assert result.exit_code == 0, result.output
    lines = warnings_of(result.output)
    assert lines == [
        "warn rule 'visio-64bit-reinstall' (PS100124): maintenance window 'Weekend' (general) "
        "delays required deployments to members",
        "warn rule 'visio-64bit-reinstall' (PS100124): maintenance window 'Patch night' "
        "(software updates) delays required deployments to members",
    ]
    # the settings are read only where ServiceWindowsCount is not 0
    settings_reads = [
        c.collection_id for c in adminservice.calls if c.route == "SMS_CollectionSettings"
    ]
    assert sorted(settings_reads) == ["PS100124", "PS100125"]
    assert Counter(routes)["SMS_Collection"] == 1


def test_a_limiting_collection_other_than_all_systems_is_named(
    check: Check, adminservice: AdminServiceSimulator
) -> None:
    adminservice.add_collection("SMS00001", "All Systems")
    adminservice.set_direct_members("SMS00001", [d.resource_id for d in scenario.DEVICES])
    adminservice.add_collection("PS100200", "Pilot")
    adminservice.set_direct_members("PS100200", [16777301])
    adminservice.set_limiting_collection("PS100123", "PS100200")
    adminservice.set_limiting_collection("PS100126", "PS100200")  # removes: no warning

    result, routes = check()
    assert result.exit_code == 0, result.output
    assert warnings_of(result.output) == [
        "warn rule 'project-64bit-reinstall' (PS100123): limited to PS100200 'Pilot' (1 members; "
        f"All Systems: {len(scenario.DEVICES)}): devices outside it get a rule but never become "
        "members"
    ]
    # the limiting collection's member count: one more query, for all of them
    assert Counter(routes)["SMS_Collection"] == 2


def test_the_number_of_requests_does_not_grow_with_the_rules(
    check: Check, adminservice: AdminServiceSimulator, tmp_path: Path
) -> None:
    def rules_file(count: int) -> str:
        rules: list[dict[str, Any]] = []
        for n in range(count):
            collection_id = f"PS1001{0x30 + n:02X}"
            adminservice.add_collection(collection_id, f"Remediation {n}")
            adminservice.add_deployment(collection_id, f"Available {n}", intent=AVAILABLE)
            match = {"InsertionString1": "MsgType_Office365Upgrade", "InsertionString2": f"v{n}"}
            rules.append(rule(name=f"rule-{n}", collection_id=collection_id, match=match))
        path = tmp_path / f"rules-{count}.json"
        path.write_text(rules_text(*rules))
        return str(path)

    asked = {}
    for count in (1, 4, 12):
        result, routes = check(rules_file=rules_file(count))
        assert result.exit_code == 0, result.output
        assert warnings_of(result.output) == []
        asked[count] = Counter(routes)
    assert asked[1] == asked[4] == asked[12]
    assert asked[12] == {"metadata": 1, "SMS_Collection": 1, "SMS_DeploymentSummary": 1}


def test_a_missing_collection_still_fails_its_check(check: Check) -> None:
    result, _ = check(rules_file=str(FIXTURES.parent / "remediation-rules-missing-collection.json"))
    assert result.exit_code == 1
    assert "FAIL collection PS1000FF: collection PS1000FF does not exist" in result.output
    assert "create the collection" in result.output


def test_an_unreadable_deployment_list_is_a_warning(
    check: Check, adminservice: AdminServiceSimulator, runtime_overrides: Callable[..., None]
) -> None:
    runtime_overrides(http_retry=RetryPolicy(attempts=1))
    adminservice.fail_next(1, 403, route="SMS_DeploymentSummary")
    result, _ = check()
    assert result.exit_code == 0, result.output
    lines = warnings_of(result.output)
    assert len(lines) == len(RULES)
    assert all("deployments not checked: AdminService refused" in line for line in lines), lines
    assert_each_names_its_rule(lines)
