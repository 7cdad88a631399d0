"""Memberships that end: adds of a rule with ``remove_after_days`` are removed by the
daily sweep (the ``expire_memberships`` timer through Microsoft's worker) once their
time is up; only what cm-remediate added, each once, through the guard, every removal
recorded as the next decision after its add."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from cmremediate_cli.main import app
from shared.app.runtime import Runtime, install_runtime, process_overrides
from shared.domain.requests import RemediationRequest
from tests.conftest import checked
from tests.remediation import scenario
from tests.remediation.conftest import FIXTURES, body_of, fixture

pytestmark = pytest.mark.stack

runner = CliRunner()
ADDED, MEMBER = 16777301, 16777302  # PC-ADD01 (added by us), PC-MEMBER01 (not by us)


def request(name: str, decision: int = 1) -> RemediationRequest:
    return RemediationRequest.model_validate({**fixture(name)["body"], "decision": decision})


@pytest.fixture
def expiring(make_remediation, tmp_path):
    """The fixture rules, the project rule's adds lasting 30 days; one add made by us
    (PC-ADD01) and one device that was a member already (PC-MEMBER01)."""
    rules = json.loads((FIXTURES.parent / "remediation-rules.json").read_text(encoding="utf-8"))
    for rule in rules["rules"]:
        if rule["name"] == "project-64bit-reinstall":
            rule["remove_after_days"] = 30
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules), encoding="utf-8")
    remediation = make_remediation(REMEDIATION_RULES_FILE=str(path))
    remediation.deliver(body_of(fixture("01-add")), message_id="add")
    remediation.deliver(body_of(fixture("03-already-member")), message_id="member")
    assert remediation.outcome(request("01-add")).kind == "added"
    assert remediation.outcome(request("03-already-member")).kind == "already-member"
    return remediation


def days_later(days: float) -> Runtime:
    """The functions' runtime on the scenario's clock moved ``days`` ahead."""
    later = scenario.FIXED_NOW + timedelta(days=days)
    runtime = Runtime.from_environment(overrides=replace(process_overrides(), clock=lambda: later))
    install_runtime(runtime)
    return runtime


def removals(remediation) -> Counter[tuple[str, int]]:
    return remediation.adminservice.rule_changes("DeleteMembershipRule")


def test_the_sweep_removes_only_our_adds_once_their_time_is_up(expiring):
    remediation = expiring
    days_later(29)
    checked(remediation.app.host.call_timer("expire_memberships"))
    assert removals(remediation) == Counter()  # not yet
    assert ADDED in remediation.adminservice.direct_members("PS100123")

    runtime = days_later(31)
    checked(remediation.app.host.call_timer("expire_memberships"))
    assert removals(remediation) == Counter({("PS100123", ADDED): 1})
    members = remediation.adminservice.direct_members("PS100123")
    assert ADDED not in members and MEMBER in members  # never one it did not add

    added = runtime.audit.find(request("01-add"))
    removed = runtime.audit.find(request("01-add", decision=2))
    assert added.kind == "added" and added.retried_as == 2  # the add's row stays
    assert added.retried_by == "expiry (expiry sweep)"
    assert removed.kind == "removed" and removed.resource_id == ADDED
    assert "expired after 31.0 days" in removed.reason
    assert runtime.audit.find(request("03-already-member")).retried_as is None

    checked(remediation.app.host.call_timer("expire_memberships"))  # nothing due any more
    assert removals(remediation) == Counter({("PS100123", ADDED): 1})


def test_two_sweeps_at_once_remove_once(expiring):
    remediation = expiring
    runtime = days_later(40)
    rule = runtime.rules.named("project-64bit-reinstall")
    due = runtime.expiry.due(rule)
    assert [r.outcome.resource_id for r in due] == [ADDED]
    reports = []
    sweeps = [
        threading.Thread(
            target=lambda who=who: reports.append(runtime.expiry.expire(rule, due, by=who))
        )
        for who in ("a", "b")
    ]
    for sweep in sweeps:
        sweep.start()
    for sweep in sweeps:
        sweep.join()
    assert sorted(len(r.done) for r in reports) == [0, 1]
    assert removals(remediation) == Counter({("PS100123", ADDED): 1})
    assert runtime.expiry.due(rule) == []


def test_expire_on_demand_with_a_dry_run_first(expiring):
    remediation = expiring
    days_later(2)
    shown = runner.invoke(
        app, ["expire", "--rule", "project-64bit-reinstall", "--older-than", "1", "--dry-run"]
    )
    assert shown.exit_code == 0 and "1 membership(s) would be removed" in shown.stdout
    assert removals(remediation) == Counter()
    done = runner.invoke(
        app, ["expire", "--rule", "project-64bit-reinstall", "--older-than", "1", "--by", "ops"]
    )
    assert done.exit_code == 0, done.output
    assert "1 due, 1 removed" in done.stdout
    assert removals(remediation) == Counter({("PS100123", ADDED): 1})
    refused = runner.invoke(app, ["expire", "--rule", "visio-64bit-reinstall"])
    assert refused.exit_code == 2 and "no remove_after_days" in refused.output


@pytest.mark.usefixtures("one_http_attempt")
def test_a_sweep_that_fails_half_way_is_finished_by_the_next(expiring):
    remediation = expiring
    runtime = days_later(31)
    remediation.adminservice.storm(503, count=1)  # the removal meets an outage
    failed = remediation.app.host.call_timer("expire_memberships")
    assert failed.ok  # the sweep reports what it left; the timer does not fail for it
    assert removals(remediation) == Counter()
    added = runtime.audit.find(request("01-add"))
    assert added.retried_as == 2  # marked, not removed, not recorded
    assert runtime.audit.find(request("01-add", decision=2)) is None

    checked(remediation.app.host.call_timer("expire_memberships"))
    assert removals(remediation) == Counter({("PS100123", ADDED): 1})
    assert runtime.audit.find(request("01-add", decision=2)).kind == "removed"
    rows = [
        o
        for o in runtime.audit.query(machine_name="PC-ADD01")
        if o.rule == "project-64bit-reinstall"
    ]
    assert sorted((o.decision, o.kind) for o in rows) == [(1, "added"), (2, "removed")]
