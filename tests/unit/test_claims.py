"""Membership claims on real table storage: one holder per (collection, device) across
claimants, settled claims stand for their time, a vanished claimant is taken over."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.membership import claim_owner
from shared.domain.requests import RemediationRequest
from shared.platform.storage import StorageAccount
from shared.remediation.audit_log import AuditLog
from shared.remediation.claims import LEASE, TableMembershipClaims
from tests.helpers import make_request

pytestmark = pytest.mark.stack

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DEVICE = 16777301


def request(record_id: int, collection_id: str = "PS100123") -> RemediationRequest:
    return make_request(record_id=record_id, machine_name="PC-ADD01", collection_id=collection_id)


@pytest.fixture
def table(stack):
    runtime = stack.runtime()
    return StorageAccount(runtime.settings).table(f"c{stack.queue_name.replace('-', '')}"[:60])


@pytest.fixture
def audit(stack):
    runtime = stack.runtime()
    table = StorageAccount(runtime.settings).table(f"a{stack.queue_name.replace('-', '')}"[:60])
    return AuditLog(table, sleep=lambda _: None)


def claims(table, audit: AuditLog) -> TableMembershipClaims:
    # no pause while another claimant is busy: the tests look at the answer itself
    return TableMembershipClaims(
        table,
        standing=timedelta(hours=24),
        outcome_of=lambda site, record, rule, dry_run, decision: audit.kind_of(
            site, record, rule, dry_run=dry_run, decision=decision
        ),
        sleep=lambda _: None,
    )


def test_many_claimants_at_once_one_takes_the_rest_are_told_it_is_busy(table, audit):
    stores = [claims(table, audit), claims(table, audit)]  # two instances

    def take(n: int):
        return stores[n % 2].take(request(n + 1), DEVICE, NOW, dry_run=False)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(take, range(16)))
    taken = [a for a in answers if a.state == "taken"]
    assert len(taken) == 1 and not taken[0].recovering
    assert {a.state for a in answers} == {"taken", "busy"}
    assert {a.owner for a in answers} == {taken[0].owner}


def test_a_settled_claim_makes_the_next_request_a_member_until_it_has_stood_its_time(table, audit):
    store = claims(table, audit)
    first, second = request(1), request(2)
    assert store.take(first, DEVICE, NOW, dry_run=False).state == "taken"
    audit.record(first, "added", "the test")  # the claimant's outcome settles it
    later = store.take(second, DEVICE, NOW + timedelta(hours=23), dry_run=False)
    assert (later.state, later.owner, later.since) == ("added", claim_owner(first), NOW)
    # another collection, or a dry run, is another pair
    assert store.take(request(3, "PS100124"), DEVICE, NOW, dry_run=False).state == "taken"
    assert store.take(second, DEVICE, NOW, dry_run=True).state == "taken"
    # after MEMBERSHIP_CLAIM_HOURS the site's own membership decides again
    expired = store.take(second, DEVICE, NOW + timedelta(hours=25), dry_run=False)
    assert (expired.state, expired.recovering) == ("taken", False)


def test_a_redelivery_of_the_claimant_takes_its_claim_back_as_recovering(table, audit):
    store = claims(table, audit)
    assert store.take(request(1), DEVICE, NOW, dry_run=False).state == "taken"
    again = store.take(request(1), DEVICE, NOW + timedelta(minutes=1), dry_run=False)
    assert (again.state, again.recovering, again.resumed) == ("taken", True, True)


def test_a_vanished_claimant_is_taken_over_after_the_lease_as_recovering(table, audit):
    store = claims(table, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    assert store.take(request(2), DEVICE, NOW + LEASE / 2, dry_run=False).state == "busy"
    taken = store.take(request(2), DEVICE, NOW + LEASE + timedelta(seconds=1), dry_run=False)
    assert (taken.state, taken.owner, taken.recovering) == ("taken", claim_owner(request(2)), True)
    assert not taken.resumed  # another request's claim: not its own earlier attempt
    # the first claimant comes back: the pair is no longer its own
    assert store.take(request(1), DEVICE, NOW + LEASE * 1.2, dry_run=False).state == "busy"


def test_release_drops_only_the_claimants_own_adding_claim_and_forget_drops_any(table, audit):
    store = claims(table, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    store.release(request(2), DEVICE, dry_run=False)  # not its claim: nothing happens
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "busy"
    store.release(request(1), DEVICE, dry_run=False)
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "taken"
    audit.record(request(2), "already-member", "the test")  # settled
    store.release(request(3), DEVICE, dry_run=False)  # not its claim: nothing happens
    assert store.take(request(3), DEVICE, NOW, dry_run=False).state == "added"
    store.forget(request(4), DEVICE, dry_run=False)  # the rule was removed
    assert store.take(request(3), DEVICE, NOW, dry_run=False).state == "taken"
    store.forget(request(4), 1, dry_run=False)  # nothing to forget is no error


def test_an_abandoned_claim_is_taken_over_at_once_as_recovering(table, audit):
    store = claims(table, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    store.abandon(request(2), DEVICE, dry_run=False)  # not its claim: nothing happens
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "busy"
    store.abandon(request(1), DEVICE, dry_run=False)  # its add failed midway
    taken = store.take(request(2), DEVICE, NOW + timedelta(seconds=1), dry_run=False)
    assert (taken.state, taken.recovering, taken.resumed) == ("taken", True, False)
    # the new holder's claim is a claim like any other: busy for the next one
    assert store.take(request(3), DEVICE, NOW + timedelta(seconds=2), dry_run=False).state == "busy"


def test_a_claimant_back_for_its_abandoned_claim_and_a_taker_cannot_both_hold_it(table, audit):
    """Its own redelivery and another request race for an abandoned claim: one wins, the
    other is told the pair is busy (else both would add)."""
    store = claims(table, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    store.abandon(request(1), DEVICE, dry_run=False)
    stores = [claims(table, audit), claims(table, audit)]
    later = NOW + timedelta(seconds=5)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(
            pool.map(lambda n: stores[n].take(request(n + 1), DEVICE, later, dry_run=False), [0, 1])
        )
    assert sorted(a.state for a in answers) == ["busy", "taken"]


class _CountingTable:
    """The table client, counting the storage calls made through it."""

    def __init__(self, table) -> None:
        self._table = table
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        attribute = getattr(self._table, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return call


def test_a_pair_nobody_holds_is_claimed_with_one_write_and_a_held_one_read_once(table, audit):
    counting = _CountingTable(table)
    store = claims(counting, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)  # creates the table
    counting.calls.clear()
    assert store.take(request(1), DEVICE + 1, NOW, dry_run=False).state == "taken"
    assert counting.calls == ["create_entity"]
    counting.calls.clear()
    assert store.take(request(2), DEVICE + 1, NOW, dry_run=False).state == "busy"
    # the create meets the row, one read tells who holds it (then the busy wait)
    assert counting.calls[:2] == ["create_entity", "get_entity"]


def test_a_claimant_that_recorded_an_outcome_without_a_member_is_taken_over_at_once(table, audit):
    store = claims(table, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    # held by the guard, and its release of the claim never arrived
    audit.record(request(1), "held-rate-limit", "the test")
    taken = store.take(request(2), DEVICE, NOW + timedelta(seconds=5), dry_run=False)
    assert (taken.state, taken.owner, taken.recovering) == ("taken", claim_owner(request(2)), True)


def test_a_claim_settled_as_added_by_an_earlier_version_still_makes_a_member(table, audit):
    store = claims(table, audit)
    store.take(request(9), DEVICE + 7, NOW, dry_run=False)  # creates the table
    table.create_entity(
        {
            "PartitionKey": "PS100123",
            "RowKey": str(DEVICE),
            "State": "added",
            "Owner": "PS1-1-OldRule",
            "Since": NOW,
        }
    )
    later = store.take(request(2), DEVICE, NOW + timedelta(hours=1), dry_run=False)
    assert (later.state, later.owner) == ("added", "PS1-1-OldRule")


def test_a_settled_claim_costs_its_follower_one_create_one_read_and_the_outcome(table, audit):
    counting = _CountingTable(table)
    store = claims(counting, audit)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    audit.record(request(1), "added", "the test")
    counting.calls.clear()
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "added"
    assert counting.calls == ["create_entity", "get_entity"]  # + the outcome's one read
