"""Membership claims on real table storage: one holder per (collection, device) across
claimants, settled claims stand for their time, a vanished claimant is taken over."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.membership import claim_owner
from shared.domain.requests import RemediationRequest
from shared.platform.storage import StorageAccount
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


def claims(table) -> TableMembershipClaims:
    # no pause while another claimant is busy: the tests look at the answer itself
    return TableMembershipClaims(table, standing=timedelta(hours=24), sleep=lambda _: None)


def test_many_claimants_at_once_one_takes_the_rest_are_told_it_is_busy(table):
    stores = [claims(table), claims(table)]  # two instances

    def take(n: int):
        return stores[n % 2].take(request(n + 1), DEVICE, NOW, dry_run=False)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(take, range(16)))
    taken = [a for a in answers if a.state == "taken"]
    assert len(taken) == 1 and not taken[0].recovering
    assert {a.state for a in answers} == {"taken", "busy"}
    assert {a.owner for a in answers} == {taken[0].owner}


def test_a_settled_claim_makes_the_next_request_a_member_until_it_has_stood_its_time(table):
    store = claims(table)
    first, second = request(1), request(2)
    assert store.take(first, DEVICE, NOW, dry_run=False).state == "taken"
    store.settle(first, DEVICE, NOW, dry_run=False)
    later = store.take(second, DEVICE, NOW + timedelta(hours=23), dry_run=False)
    assert (later.state, later.owner, later.since) == ("added", claim_owner(first), NOW)
    # another collection, or a dry run, is another pair
    assert store.take(request(3, "PS100124"), DEVICE, NOW, dry_run=False).state == "taken"
    assert store.take(second, DEVICE, NOW, dry_run=True).state == "taken"
    # after MEMBERSHIP_CLAIM_HOURS the site's own membership decides again
    expired = store.take(second, DEVICE, NOW + timedelta(hours=25), dry_run=False)
    assert (expired.state, expired.recovering) == ("taken", False)


def test_a_redelivery_of_the_claimant_takes_its_claim_back_as_recovering(table):
    store = claims(table)
    assert store.take(request(1), DEVICE, NOW, dry_run=False).state == "taken"
    again = store.take(request(1), DEVICE, NOW + timedelta(minutes=1), dry_run=False)
    assert (again.state, again.recovering, again.resumed) == ("taken", True, True)


def test_a_vanished_claimant_is_taken_over_after_the_lease_as_recovering(table):
    store = claims(table)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    assert store.take(request(2), DEVICE, NOW + LEASE / 2, dry_run=False).state == "busy"
    taken = store.take(request(2), DEVICE, NOW + LEASE + timedelta(seconds=1), dry_run=False)
    assert (taken.state, taken.owner, taken.recovering) == ("taken", claim_owner(request(2)), True)
    assert not taken.resumed  # another request's claim: not its own earlier attempt
    # the first claimant comes back: the pair is no longer its own
    assert store.take(request(1), DEVICE, NOW + LEASE * 1.2, dry_run=False).state == "busy"


def test_release_drops_only_the_claimants_own_adding_claim_and_forget_drops_any(table):
    store = claims(table)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    store.release(request(2), DEVICE, dry_run=False)  # not its claim: nothing happens
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "busy"
    store.release(request(1), DEVICE, dry_run=False)
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "taken"
    store.settle(request(2), DEVICE, NOW, dry_run=False)
    store.release(request(2), DEVICE, dry_run=False)  # settled: release leaves it standing
    assert store.take(request(3), DEVICE, NOW, dry_run=False).state == "added"
    store.forget(request(4), DEVICE, dry_run=False)  # the rule was removed
    assert store.take(request(3), DEVICE, NOW, dry_run=False).state == "taken"
    store.forget(request(4), 1, dry_run=False)  # nothing to forget is no error


def test_an_abandoned_claim_is_taken_over_at_once_as_recovering(table):
    store = claims(table)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    store.abandon(request(2), DEVICE, dry_run=False)  # not its claim: nothing happens
    assert store.take(request(2), DEVICE, NOW, dry_run=False).state == "busy"
    store.abandon(request(1), DEVICE, dry_run=False)  # its add failed midway
    taken = store.take(request(2), DEVICE, NOW + timedelta(seconds=1), dry_run=False)
    assert (taken.state, taken.recovering, taken.resumed) == ("taken", True, False)
    # the new holder's claim is a claim like any other: busy for the next one
    assert store.take(request(3), DEVICE, NOW + timedelta(seconds=2), dry_run=False).state == "busy"


def test_a_claimant_back_for_its_abandoned_claim_and_a_taker_cannot_both_hold_it(table):
    """Its own redelivery and another request race for an abandoned claim: one wins, the
    other is told the pair is busy (else both would add)."""
    store = claims(table)
    store.take(request(1), DEVICE, NOW, dry_run=False)
    store.abandon(request(1), DEVICE, dry_run=False)
    stores = [claims(table), claims(table)]
    later = NOW + timedelta(seconds=5)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(
            pool.map(lambda n: stores[n].take(request(n + 1), DEVICE, later, dry_run=False), [0, 1])
        )
    assert sorted(a.state for a in answers) == ["busy", "taken"]
