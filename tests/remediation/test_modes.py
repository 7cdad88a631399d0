"""Settings that change how remediation decides: identity source, dry run, refresh."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.remediation import scenario
from tests.remediation.conftest import ALL_FIXTURES, body_of, fixture
from tests.remediation.test_fixtures import adds

pytestmark = pytest.mark.stack

SINGLE_STEP = [n for n in ALL_FIXTURES if n != "04-unknown-then-discovered"]


@pytest.mark.parametrize("remediation", [{"IDENTITY_SOURCE": "adminservice"}], indirect=True)
def test_identity_from_the_adminservice_gives_the_same_outcomes(remediation):
    remediation.stack.site_db.reset()  # nothing to find in v_R_System: it must ask SMS_R_System
    for name in SINGLE_STEP:
        document = fixture(name)
        remediation.deliver(body_of(document), message_id=name)
        if not document.get("contract_violation"):
            outcome = remediation.outcome(document["body"])
            assert outcome is not None and outcome.kind == document["expected_outcome"], name
    assert remediation.adminservice.count_calls("SMS_R_System") > 0
    # the hostile names went out as escaped OData literals and found nothing
    assert remediation.adminservice.internal_errors == []


@pytest.mark.parametrize("remediation", [{"DRY_RUN": "true"}], indirect=True)
def test_dry_run_decides_and_records_but_changes_nothing(remediation):
    for name in SINGLE_STEP:
        remediation.deliver(body_of(fixture(name)), message_id=name)
    assert adds(remediation.adminservice) == Counter()
    assert remediation.adminservice.count_calls("DeleteMembershipRule") == 0
    for collection_id in scenario.COLLECTIONS:
        assert remediation.adminservice.direct_members(
            collection_id
        ) == scenario.INITIAL_MEMBERS.get(collection_id, set())
    first = remediation.outcome(fixture("01-add")["body"])
    assert first is not None and first.dry_run and first.kind == "added"
    assert "dry run" in first.reason
    removed = remediation.outcome(fixture("08-remove")["body"])
    assert removed is not None and removed.kind == "removed"


def test_no_refresh_unless_asked(remediation):
    for name in ("01-add", "07-obsolete-and-active", "16-non-ascii-name"):
        remediation.deliver(body_of(fixture(name)), message_id=name)
    assert remediation.adminservice.count_calls("RequestRefresh") == 0


@pytest.mark.parametrize("remediation", [{"ADMINSERVICE_REQUEST_REFRESH": "true"}], indirect=True)
def test_refresh_at_most_once_per_collection_per_batch(remediation):
    # a batch: several adds to PS100123 and one to PS100124
    bodies = [fixture("01-add")["body"]]
    for n, machine in enumerate(["PC-REIMAGED01", "ÑANDÚ-PC"]):
        bodies.append(
            {**fixture("01-add")["body"], "record_id": 2**56 + 5000 + n, "machine_name": machine}
        )
    bodies.append(fixture("07-obsolete-and-active")["body"])
    for n, body in enumerate(bodies):
        remediation.deliver(body_of({"body": body}), message_id=f"b{n}")
    assert remediation.adminservice.count_calls("RequestRefresh", collection_id="PS100123") == 1
    assert remediation.adminservice.count_calls("RequestRefresh", collection_id="PS100124") == 1
