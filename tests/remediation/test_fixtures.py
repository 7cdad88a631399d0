"""Every queue fixture through the real queue function, against the simulators."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from shared.domain.requests import RemediationRequest
from tests.remediation import scenario
from tests.remediation.conftest import ALL_FIXTURES, body_of, fixture

pytestmark = pytest.mark.stack

ALL = ALL_FIXTURES
#: Fixtures whose outcome needs more than one delivery; tested on their own below.
MULTI_STEP = {"04-unknown-then-discovered"}


def adds(adminservice):
    """Successful AddMembershipRule calls per (collection, device), as the service saw them."""
    return adminservice.rule_changes()


def test_every_fixture_ends_in_its_documented_outcome(remediation):
    expected_members = {cid: set(members) for cid, members in scenario.INITIAL_MEMBERS.items()}
    for name in ALL:
        if name in MULTI_STEP:
            continue
        document = fixture(name)
        remediation.deliver(body_of(document), message_id=name)
        if document.get("contract_violation"):
            continue  # recorded under the unparsed partition; see the test below
        outcome = remediation.outcome(document["body"])
        assert outcome is not None, name
        assert outcome.kind == document["expected_outcome"], f"{name}: {outcome.reason}"
        # the ResourceID the status message carried is kept beside the decision
        assert outcome.message_resource_id == document["body"].get("message_resource_id")
        request = RemediationRequest.model_validate(document["body"])
        if outcome.kind == "added":
            expected_members.setdefault(request.collection_id, set()).add(
                scenario.EXPECTED_RESOURCE[request.machine_name]
            )
        if outcome.kind == "removed":
            expected_members[request.collection_id].discard(
                scenario.EXPECTED_RESOURCE[request.machine_name]
            )
    # the collections hold exactly the expected devices, none added twice
    for collection_id in scenario.COLLECTIONS:
        assert remediation.adminservice.direct_members(collection_id) == expected_members.get(
            collection_id, set()
        ), collection_id
    assert all(count == 1 for count in adds(remediation.adminservice).values())


def test_contract_violations_are_recorded_as_rejected_input(remediation):
    for name in ALL:
        document = fixture(name)
        if not document.get("contract_violation"):
            continue
        remediation.deliver(body_of(document), message_id=f"msg-{name}")
        recorded = [o for o in remediation.runtime.audit.query() if o.kind == "rejected-input"]
        assert any(name.split("-", 1)[1].split("-")[0] in o.reason or o.reason for o in recorded)
    outcomes = remediation.runtime.audit.query()
    assert len(outcomes) == sum(1 for n in ALL if fixture(n).get("contract_violation"))
    assert {o.kind for o in outcomes} == {"rejected-input"}


def test_redelivery_keeps_the_first_outcome_and_adds_once(remediation):
    body = body_of(fixture("01-add"))
    for attempt in range(3):
        remediation.deliver(body, message_id="same", dequeue_count=attempt + 1)
    outcome = remediation.outcome(fixture("01-add")["body"])
    assert outcome is not None and outcome.kind == "added"
    assert adds(remediation.adminservice) == Counter({("PS100123", 16777301): 1})
    assert remediation.adminservice.direct_members("PS100123") == {16777301, 16777302}


def test_unknown_device_is_retried_until_discovered(remediation):
    document = fixture("04-unknown-then-discovered")
    remediation.deliver(body_of(document), message_id="new-1")
    assert remediation.outcome(document["body"]) is None  # no outcome yet: not decided
    time.sleep(1.2)  # RESOLVE_RETRY_DELAY_SECONDS=1
    (requeued,) = remediation.requeued()
    assert requeued.model_dump() == RemediationRequest.model_validate(document["body"]).model_dump()

    # discovery ran: the record is in the site database and behind the AdminService
    remediation.stack.site_db.insert_devices([scenario.DISCOVERED_LATER])
    remediation.adminservice.add_device(scenario.DISCOVERED_LATER)
    remediation.deliver(requeued.to_json(), message_id="new-2")
    outcome = remediation.outcome(document["body"])
    assert outcome is not None and outcome.kind == "added"
    assert outcome.resource_id == 16777309
    assert 16777309 in remediation.adminservice.direct_members("PS100123")


def test_hostile_names_never_widen_a_query(remediation):
    for name in ("13-hostile-quote", "14-hostile-odata-injection", "15-hostile-percent"):
        remediation.deliver(body_of(fixture(name)), message_id=name)
    assert adds(remediation.adminservice) == Counter()
    assert remediation.adminservice.direct_members("PS100123") == {16777302}
