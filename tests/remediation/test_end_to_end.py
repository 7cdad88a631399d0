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


#: Every third status message that names a known device carries its ResourceID (as
#: SMS_StatMsgWithInsStrings may); every eleventh, another device's: not to be guessed.
AGREEING, DISAGREEING = 3, 11


@pytest.fixture(params=["sitedb", "adminservice"])
def export_source(request: pytest.FixtureRequest) -> str:
    """Where the export reads the status messages (``EXPORT_SOURCE``)."""
    return str(request.param)


@pytest.fixture
def workload_remediation(make_remediation, export_source, monkeypatch, local_ca: LocalCA, request):
    """The remediation stack with a generated workload instead of the fixture scenario;
    with the AdminService source there is no SITE_DB_CONNECTION at all, identity comes
    from the AdminService too, and ODBC is a tripwire."""
    if export_source == "adminservice":
        remediation = make_remediation(EXPORT_SOURCE="adminservice")
        monkeypatch.delenv("SITE_DB_CONNECTION")
        request.getfixturevalue("no_odbc")
    else:
        remediation = make_remediation()
    workload = generate_workload(
        seed=31, sites=("PS1", "PS2"), message_count=600, devices_per_site=40
    )
    remediation.stack.site_db.reset()
    record_ids = remediation.stack.site_db.load_workload(workload)
    remediation.adminservice.clear_devices()  # the workload's devices, not the scenario's
    for device in workload.devices:
        remediation.adminservice.add_device(device)
    carried: dict[int, int] = {}
    if export_source == "adminservice":
        for n, (message, record_id) in enumerate(zip(workload.messages, record_ids, strict=True)):
            resolution = workload.expected_resolution.get(message.machine_name.upper())
            if not isinstance(resolution, int):
                continue
            if n % DISAGREEING == 0:
                carried[record_id] = resolution + 1
            elif n % AGREEING == 0:
                carried[record_id] = resolution
        for record_id, resource_id in carried.items():
            remediation.adminservice.set_status_message_resource_id(record_id, resource_id)
    # the shipped rules and their three collections, empty
    monkeypatch.setenv("REMEDIATION_RULES_FILE", "rules.json")
    return remediation, workload, record_ids, carried


def test_status_messages_end_in_the_expected_collections(workload_remediation):
    remediation, workload, record_ids, carried = workload_remediation
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
    for message, record_id in zip(workload.messages, record_ids, strict=True):
        for rule in message.expected_rules:
            resolution = workload.expected_resolution.get(
                message.machine_name.upper(), "unknown-device"
            )
            if netbios_problem(message.machine_name):
                expected_outcomes["rejected-input"] += 1
            elif carried.get(record_id, resolution) != resolution:
                expected_outcomes["ambiguous"] += 1  # the message names another device
            elif isinstance(resolution, int):
                expected_members[RULE_COLLECTION[rule]].add(resolution)
                expected_outcomes["added-or-member"] += 1
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

    outcomes = runtime.audit.query()
    recorded = Counter(o.kind for o in outcomes)
    # each audit row keeps the ResourceID its status message carried
    matched = {
        rid for m, rid in zip(workload.messages, record_ids, strict=True) if m.expected_rules
    }
    assert {o.record_id: o.message_resource_id for o in outcomes if o.message_resource_id} == {
        rid: resource for rid, resource in carried.items() if rid in matched
    }
    assert recorded["added"] + recorded["already-member"] == expected_outcomes["added-or-member"]
    assert recorded["ambiguous"] == expected_outcomes["ambiguous"]
    assert recorded["unknown-device"] == expected_outcomes["unknown-device"]
    assert recorded["rejected-input"] == expected_outcomes["rejected-input"]
    assert recorded["added"] == len(adds)
    print(f"\nend-to-end ledger: delivered={delivered} outcomes={dict(recorded)} adds={len(adds)}")
