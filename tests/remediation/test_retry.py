"""Decide again: an ``ambiguous`` and an ``unknown-device`` outcome, their causes
cleaned up, ``cmremediate retry``, then the queue function through Microsoft's worker
decides each once more. The old rows stay, linked to the new decisions; every decision
is recorded exactly once, even with two operators at once or a send that failed."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cmremediate_cli.main import app
from cmremediate_cli.render import render_outcomes
from shared.domain.requests import RemediationRequest
from tests.remediation.conftest import body_of, fixture
from tests.remediation.scenario import device

pytestmark = pytest.mark.stack

runner = CliRunner()
GHOST = device(16777320, "PC-GHOST01")
DUPLICATE = 16777304  # the second PC-AMBIG01 record; 16777303 stays


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def request(name: str, decision: int = 1) -> RemediationRequest:
    return RemediationRequest.model_validate({**fixture(name)["body"], "decision": decision})


@pytest.fixture
def decided(make_remediation):
    """An ambiguous and an unknown-device outcome recorded through the worker, then
    their causes gone: the duplicate record deleted, the device discovered."""
    remediation = make_remediation()
    remediation.deliver(body_of(fixture("06-ambiguous")), message_id="ambiguous")
    remediation.deliver(body_of(fixture("05-unknown-device-gives-up")), message_id="ghost")
    assert remediation.outcome(request("06-ambiguous")).kind == "ambiguous"
    assert remediation.outcome(request("05-unknown-device-gives-up")).kind == "unknown-device"
    remediation.stack.site_db.delete_devices([DUPLICATE])
    remediation.stack.site_db.insert_devices([GHOST])
    remediation.adminservice.add_device(GHOST)
    return remediation


def drain(remediation) -> int:
    with remediation.app.listener(visibility_timeout_seconds=0) as listener:
        report = listener.drain_until_empty()
    assert report.poisoned == 0
    return report.succeeded


def adds(remediation) -> Counter[tuple[str, int]]:
    return remediation.adminservice.rule_changes()


def test_retry_decides_again_and_links_the_decisions(decided):
    remediation = decided
    shown = run("retry", "--kind", "ambiguous", "--kind", "unknown-device", "--dry-run")
    assert shown.exit_code == 0 and "2 outcome(s) would be decided again" in shown.stdout
    assert drain(remediation) == 0  # a dry run sends nothing

    result = run("retry", "--kind", "ambiguous", "--kind", "unknown-device", "--by", "ops@test")
    assert result.exit_code == 0, result.output
    assert "2 outcome(s) sent to be decided again" in result.stdout
    assert drain(remediation) == 2

    for name, resource in (("06-ambiguous", 16777303), ("05-unknown-device-gives-up", 16777320)):
        first = remediation.outcome(request(name))
        second = remediation.outcome(request(name, decision=2))
        assert first.kind in ("ambiguous", "unknown-device")  # the old row keeps its outcome
        assert (first.retried_as, first.retried_by) == (2, "ops@test")
        assert second.kind == "added" and second.resource_id == resource
        assert second.decision == 2
    assert adds(remediation) == Counter({("PS100123", 16777303): 1, ("PS100123", 16777320): 1})

    # the latest decisions are no longer retryable: nothing is sent twice
    again = run("retry", "--all")
    assert again.exit_code == 0 and "0 outcome(s) sent" in again.stdout
    assert drain(remediation) == 0

    # `outcomes` shows the chain
    chain = json.loads(run("outcomes", "--machine", "pc-ghost01", "--json").stdout)
    assert sorted((o["decision"], o["kind"], o["retried_as"]) for o in chain) == [
        (1, "unknown-device", 2),
        (2, "added", None),
    ]
    wide = Console(width=400, record=True)
    wide.print(render_outcomes(remediation.runtime.audit.query(machine_name="PC-GHOST01")))
    table = wide.export_text()
    assert "decided again as 2 by ops@test" in table and "added (decision 2, after 1)" in table


def test_two_operators_at_once_ask_once_and_a_lost_send_is_sent_again(decided):
    remediation = decided
    retries = remediation.runtime.retries
    first_look = retries.select(machine_name="PC-GHOST01")
    second_look = retries.select(machine_name="PC-GHOST01")
    assert len(first_look) == len(second_look) == 1

    class LostSend:
        def send(self, requests):
            raise OSError("the queue did not answer")

    lost = type(retries)(remediation.runtime.audit, LostSend())
    with pytest.raises(OSError):
        lost.retry(first_look, by="ops-a")  # marked, but never sent
    # the other operator read the row before the mark: the ETag says it changed
    report = retries.retry(second_look, by="ops-b")
    assert report.sent == [] and "changed since it was read" in report.skipped[0][1]
    assert drain(remediation) == 0

    # the next retry sees decision 2 asked for but never recorded, and sends it (once)
    pending = retries.select(machine_name="PC-GHOST01")
    assert [r.outcome.retried_as for r in pending] == [2]
    assert [d for _, d in retries.retry(pending, by="ops-b").sent] == [2]
    assert drain(remediation) == 1
    assert remediation.outcome(request("05-unknown-device-gives-up", decision=2)).kind == "added"
    first = remediation.outcome(request("05-unknown-device-gives-up"))
    assert first.retried_by == "ops-a"  # whoever marked it first
    assert retries.select(machine_name="PC-GHOST01") == []
    assert adds(remediation) == Counter({("PS100123", 16777320): 1})


def test_retry_refuses_what_cannot_be_decided_again(decided):
    nothing = run("retry")
    assert nothing.exit_code == 2 and "choose with" in nothing.output
    added = run("retry", "--kind", "added")
    assert added.exit_code == 2 and "can be decided again" in added.output
