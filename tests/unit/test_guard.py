"""The guard's window row on real table storage: it grows past one 64 KiB property,
forgets adds older than an hour, and two limiters cannot both take the last slot."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.requests import RemediationRequest
from shared.platform.storage import StorageAccount
from shared.remediation.guard import BLOCK, BLOCK_SECONDS, BlastRadiusGuard
from tests.helpers import make_request

pytestmark = pytest.mark.stack

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def request(record_id: int, collection_id: str = "PS100123") -> RemediationRequest:
    return make_request(
        record_id=record_id, machine_name=f"PC{record_id}", collection_id=collection_id
    )


@pytest.fixture
def table(stack):
    runtime = stack.runtime()
    return StorageAccount(runtime.settings).table(f"t{stack.queue_name.replace('-', '')}"[:60])


def test_a_large_window_spans_several_properties(table):
    limiter = BlastRadiusGuard(table, 8000)
    count = 7000  # 98 KB of entries: more than one binary property holds
    second = int(NOW.timestamp())

    def seed(entries, holding, start):
        entries.update({n.to_bytes(6, "big"): second for n in range(start, start + 1000)})
        return True, holding, limiter._decision(True, entries, limiter.limit)

    # one write per thousand: seeding through reserve would take 7000 round trips
    for start in range(0, count, 1000):
        limiter._update("PS100123", False, NOW, lambda e, h, s=start: seed(e, h, s))
    assert limiter.usage("PS100123", NOW) == count
    assert int(table.get_entity("PS100123", "window")["Chunks"]) == 2
    decision = limiter.reserve(request(1), NOW, dry_run=False)
    # a block of slots for this instance's next adds, in one write
    assert (decision.allowed, decision.adds_in_window) == (True, count + BLOCK)
    assert limiter.usage("PS100123", NOW + timedelta(minutes=59)) == count + BLOCK
    assert limiter.usage("PS100123", NOW + timedelta(minutes=61)) == 0


def test_two_limiters_never_both_take_the_last_slot(table):
    limiters = [BlastRadiusGuard(table, 5), BlastRadiusGuard(table, 5)]

    def take(n: int) -> bool:
        return limiters[n % 2].reserve(request(n + 1), NOW, dry_run=False).allowed

    with ThreadPoolExecutor(max_workers=8) as pool:
        allowed = list(pool.map(take, range(20)))
    assert allowed.count(True) == 5
    assert limiters[0].usage("PS100123", NOW) == 5


def test_first_hold_is_reported_once_per_episode(table):
    limiter = BlastRadiusGuard(table, 1)
    assert limiter.reserve(request(1), NOW, dry_run=False).allowed
    holds = [limiter.reserve(request(n), NOW, dry_run=False) for n in (2, 3, 4)]
    assert [h.first_hold for h in holds] == [True, False, False]
    # the slot counts from the latest moment its add may happen
    assert holds[0].next_slot_utc == NOW + timedelta(hours=1, seconds=BLOCK_SECONDS)
    later = NOW + timedelta(minutes=61)
    assert limiter.reserve(request(5), later, dry_run=False).allowed  # a slot freed up
    assert limiter.reserve(request(6), later, dry_run=False).first_hold  # a new episode


def test_a_slot_given_back_is_free_again_and_dry_runs_count_apart(table):
    limiter = BlastRadiusGuard(table, 1)
    assert limiter.reserve(request(1), NOW, dry_run=False).allowed
    assert limiter.reserve(request(1), NOW, dry_run=False).allowed  # the same request again
    assert limiter.reserve(request(1), NOW, dry_run=True).allowed
    assert not limiter.reserve(request(2), NOW, dry_run=False).allowed
    limiter.give_back(request(1), NOW, dry_run=False)
    assert limiter.reserve(request(2), NOW, dry_run=False).allowed
    assert limiter.usage("PS100124", NOW) == 0  # other collections have their own window


def test_a_rules_own_limit_bounds_its_adds_in_the_shared_window(table):
    limiter = BlastRadiusGuard(table, 5)
    assert limiter.reserve(request(1), NOW, dry_run=False, limit=2).allowed
    assert limiter.reserve(request(2), NOW, dry_run=False).allowed  # another rule, the default
    held = limiter.reserve(request(3), NOW, dry_run=False, limit=2)
    assert (held.allowed, held.limit, held.adds_in_window) == (False, 2, 2)
    assert limiter.reserve(request(4), NOW, dry_run=False).limit == 5
    assert limiter.reserve(request(5), NOW, dry_run=False, limit=20).allowed  # 4 of 20


class CountingTable:
    """The real table, counting the guard's writes of its window row."""

    def __init__(self, table) -> None:
        self._table = table
        self.writes = 0

    def __getattr__(self, name: str):
        return getattr(self._table, name)

    def create_entity(self, *args, **kwargs):
        self.writes += 1
        return self._table.create_entity(*args, **kwargs)

    def update_entity(self, *args, **kwargs):
        self.writes += 1
        return self._table.update_entity(*args, **kwargs)


def test_with_room_in_the_window_one_write_serves_a_block_of_adds(table):
    counting = CountingTable(table)
    limiter = BlastRadiusGuard(counting, 1000)
    decisions = [limiter.reserve(request(n), NOW, dry_run=False) for n in range(1, BLOCK + 1)]
    assert all(d.allowed for d in decisions)
    assert counting.writes == 1
    assert limiter.usage("PS100123", NOW) == BLOCK
    # a slot given back while fresh serves the next add, still without a write
    limiter.give_back(request(1), NOW, dry_run=False)
    assert limiter.reserve(request(100), NOW, dry_run=False).allowed
    assert counting.writes == 1
    # the block is used up: the next add takes another one
    assert limiter.reserve(request(101), NOW, dry_run=False).allowed
    assert counting.writes == 2
    assert limiter.usage("PS100123", NOW) == 2 * BLOCK


def test_slots_not_used_in_time_go_back_to_the_window(table):
    limiter = BlastRadiusGuard(table, 1000)
    assert limiter.reserve(request(1), NOW, dry_run=False).allowed
    assert limiter.usage("PS100123", NOW) == BLOCK
    limiter.flush(NOW + timedelta(seconds=BLOCK_SECONDS - 1))  # still fresh: kept
    assert limiter.usage("PS100123", NOW) == BLOCK
    later = NOW + timedelta(seconds=BLOCK_SECONDS)
    # past their moment the spare slots are never handed out: a new block is taken
    assert limiter.reserve(request(2), later, dry_run=False).allowed
    assert limiter.usage("PS100123", later) == 2 + (BLOCK - 1)  # the stale ones went back
    limiter.flush(later + timedelta(seconds=BLOCK_SECONDS))
    assert limiter.usage("PS100123", later) == 2


def test_near_the_limit_every_slot_is_taken_alone_so_none_is_held_back(table):
    limiters = [BlastRadiusGuard(table, 10), BlastRadiusGuard(table, 10)]

    def take(n: int) -> bool:
        return limiters[n % 2].reserve(request(n + 1), NOW, dry_run=False).allowed

    with ThreadPoolExecutor(max_workers=8) as pool:
        allowed = list(pool.map(take, range(30)))
    assert allowed.count(True) == 10  # exactly the limit, not one slot lost to a block


def test_blocks_across_instances_never_let_more_than_the_limit_through(table):
    limit = 100
    limiters = [BlastRadiusGuard(table, limit) for _ in range(3)]

    def take(n: int) -> bool:
        return limiters[n % 3].reserve(request(n + 1), NOW, dry_run=False).allowed

    with ThreadPoolExecutor(max_workers=12) as pool:
        allowed = list(pool.map(take, range(160)))
    # blocks held for a moment by other instances may hold back a few adds, never more
    # than BLOCK - 1 per instance; they never let one through past the limit
    assert limit - 3 * (BLOCK - 1) <= allowed.count(True) <= limit
    assert limiters[0].usage("PS100123", NOW) <= limit
