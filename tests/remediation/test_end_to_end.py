"""Messages in the site database → export → Azurite queue → apply_remediation → the
AdminService simulator's collections hold exactly the expected devices: both functions
run through Microsoft's worker, the queue fed by the host's listener."""

from __future__ import annotations

from collections import Counter

import pytest

from devstack.datagen import M365_RULES, generate_workload
from devstack.tls import LocalCA
from shared.domain.devices import netbios_problem
from tests.remediation.conftest import install_fixed_clock_runtime

pytestmark = pytest.mark.stack

RULE_COLLECTION = {r["name"]: r["collection_id"] for r in M365_RULES}


@pytest.fixture
def workload_remediation(remediation, monkeypatch, local_ca: LocalCA):
    """The remediation stack with a generated workload instead of the fixture scenario."""
    workload = generate_workload(
        seed=31, sites=("PS1", "PS2"), message_count=600, devices_per_site=40
    )
    remediation.stack.site_db.reset()
    remediation.stack.site_db.load_workload(workload)
    for device in workload.devices:
        remediation.adminservice.add_device(device)
    # the shipped rules and their three collections, empty
    monkeypatch.setenv("REMEDIATION_RULES_FILE", "rules.json")
    return remediation, workload


def test_status_messages_end_in_the_expected_collections(workload_remediation):
    remediation, workload = workload_remediation
    runtime = install_fixed_clock_runtime()
    remediation.runtime = runtime
    for collection_id in RULE_COLLECTION.values():
        remediation.adminservice.set_direct_members(collection_id, ())

    remediation.app.export()
    # a storage or service hiccup fails a delivery: the host delivers it again
    with remediation.app.listener(visibility_timeout_seconds=0) as listener:
        report = listener.drain_until_empty()
    assert report.poisoned == 0
    delivered = report.succeeded
    # the host ran deliveries side by side, as on Azure
    assert report.max_in_flight > 1

    # ground truth by construction, not by the code under test
    expected_members: dict[str, set[int]] = {cid: set() for cid in RULE_COLLECTION.values()}
    expected_outcomes = Counter()
    for message in workload.messages:
        for rule in message.expected_rules:
            resolution = workload.expected_resolution.get(
                message.machine_name.upper(), "unknown-device"
            )
            if isinstance(resolution, int):
                expected_members[RULE_COLLECTION[rule]].add(resolution)
                expected_outcomes["added-or-member"] += 1
            elif netbios_problem(message.machine_name):
                expected_outcomes["rejected-input"] += 1
            else:
                expected_outcomes[resolution] += 1
    assert delivered == sum(expected_outcomes.values())

    for collection_id, members in expected_members.items():
        assert remediation.adminservice.direct_members(collection_id) == members, collection_id
    adds = Counter(
        (c.collection_id, c.resource_id)
        for c in remediation.adminservice.calls
        if c.route == "AddMembershipRule" and c.status in (200, 201)
    )
    assert all(n == 1 for n in adds.values())  # no device added twice
    assert sum(len(m) for m in expected_members.values()) == len(adds)

    recorded = Counter(o.kind for o in runtime.audit.query())
    assert recorded["added"] + recorded["already-member"] == expected_outcomes["added-or-member"]
    assert recorded["ambiguous"] == expected_outcomes["ambiguous"]
    assert recorded["unknown-device"] == expected_outcomes["unknown-device"]
    assert recorded["rejected-input"] == expected_outcomes["rejected-input"]
    assert recorded["added"] == len(adds)
    print(f"\nend-to-end ledger: delivered={delivered} outcomes={dict(recorded)} adds={len(adds)}")
