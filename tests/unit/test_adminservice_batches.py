"""AdminService questions (membership in one collection, device records by name) go out
together while a query is on its way."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.domain.devices import DeviceRecord
from shared.domain.membership import Membership
from shared.targets.adminservice_batches import MAX_PER_QUERY, DeviceBatches, MembershipBatches


class SlowLookup:
    """Answers from a fixed membership, each query held until the test lets it go."""

    def __init__(self, members: Mapping[tuple[str, int], Membership]) -> None:
        self.members = members
        self.queries: list[tuple[str, tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()

    def __call__(self, collection_id: str, resource_ids: Sequence[int]) -> dict[int, Membership]:
        with self.lock:
            self.queries.append((collection_id, tuple(resource_ids)))
        self.entered.release()
        self.gate.wait(timeout=10)
        found = {rid: self.members.get((collection_id, rid)) for rid in resource_ids}
        return {rid: kind for rid, kind in found.items() if kind is not None}


def wait_for_batch(batches: MembershipBatches, collection_id: str, size: int) -> None:
    """Until ``size`` questions wait for the collection's next query."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with batches._changed:
            batch = batches._waiting.get(collection_id)
            if batch is not None and len(batch.items) == size:
                return
        time.sleep(0.001)
    raise AssertionError(f"{size} questions never gathered")


def test_a_lone_question_is_one_query_without_waiting():
    lookup = SlowLookup({("PS100123", 1): "direct"})
    lookup.gate.set()
    batches = MembershipBatches(lookup)
    assert batches.membership("ps100123", 1) == "direct"
    assert batches.membership("PS100123", 2) is None
    assert lookup.queries == [("PS100123", (1,)), ("PS100123", (2,))]


def test_questions_that_arrive_during_a_query_share_the_next_one():
    asked = MAX_PER_QUERY - 1
    members: dict[tuple[str, int], Membership] = {
        ("PS100123", n): "other" for n in range(0, asked, 2)
    }
    members[("PS100124", 7)] = "direct"
    lookup = SlowLookup(members)
    batches = MembershipBatches(lookup)
    with ThreadPoolExecutor(max_workers=42) as pool:
        first = pool.submit(batches.membership, "PS100123", 1000)
        assert lookup.entered.acquire(timeout=5)  # the first query is on its way
        waiting = {n: pool.submit(batches.membership, "PS100123", n) for n in range(asked)}
        other = pool.submit(batches.membership, "PS100124", 7)  # another collection: no wait
        assert lookup.entered.acquire(timeout=5)
        assert ("PS100124", (7,)) in lookup.queries
        wait_for_batch(batches, "PS100123", asked)
        lookup.gate.set()
        answers = {n: future.result(timeout=10) for n, future in waiting.items()}
        assert first.result(timeout=10) is None
        assert other.result(timeout=10) == "direct"
    assert answers == {n: ("other" if n % 2 == 0 else None) for n in range(asked)}
    by_collection = [q for q in lookup.queries if q[0] == "PS100123"]
    # the questions asked during the first query went out together, in one query
    assert len(by_collection) == 2
    assert sorted(by_collection[1][1]) == list(range(asked))


def test_a_batch_is_cut_into_queries_of_at_most_the_maximum():
    lookup = SlowLookup({})
    batches = MembershipBatches(lookup)
    count = MAX_PER_QUERY * 2 + 5
    with ThreadPoolExecutor(max_workers=count + 1) as pool:
        first = pool.submit(batches.membership, "PS100123", 10_000)
        assert lookup.entered.acquire(timeout=5)
        futures = [pool.submit(batches.membership, "PS100123", n) for n in range(count)]
        wait_for_batch(batches, "PS100123", count)
        lookup.gate.set()
        assert [f.result(timeout=10) for f in futures] == [None] * count
        first.result(timeout=10)
    sizes = [len(ids) for _, ids in lookup.queries[1:]]
    assert sizes == [MAX_PER_QUERY, MAX_PER_QUERY, 5]


def test_a_failed_query_fails_every_question_in_it_and_the_next_batch_starts_afresh():
    calls = []

    def lookup(collection_id: str, resource_ids: Sequence[int]) -> dict[int, Membership]:
        calls.append(tuple(resource_ids))
        if len(calls) == 1:
            raise RuntimeError("AdminService answered 503")
        return {rid: "direct" for rid in resource_ids}

    batches = MembershipBatches(lookup)
    with pytest.raises(RuntimeError, match="503"):
        batches.membership("PS100123", 1)
    assert batches.membership("PS100123", 1) == "direct"
    assert calls == [(1,), (1,)]


def _record(resource_id: int, name: str) -> DeviceRecord:
    return DeviceRecord(
        resource_id=resource_id,
        name=name,
        netbios_name=name,
        client=1,
        active=1,
        obsolete=0,
        decommissioned=0,
        creation_date=None,
    )


def test_machine_names_looked_up_during_a_query_share_the_next_one_whatever_their_case():
    records = {"pc-01": [_record(1, "PC-01")], "pc-02": [_record(2, "pc-02"), _record(3, "PC-02")]}
    queries: list[tuple[str, ...]] = []
    gate, entered = threading.Event(), threading.Semaphore(0)

    def lookup(names: Sequence[str]) -> dict[str, list[DeviceRecord]]:
        queries.append(tuple(names))
        entered.release()
        gate.wait(timeout=10)
        return {name: records[name] for name in names if name in records}

    batches = DeviceBatches(lookup)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batches.find_devices, "PC-09")
        assert entered.acquire(timeout=5)
        later = [pool.submit(batches.find_devices, n) for n in ("PC-01", "Pc-02", "pc-03")]
        wait_for_batch(batches, "", 3)
        gate.set()
        assert first.result(timeout=10) == []
        found = [f.result(timeout=10) for f in later]
    assert [[r.resource_id for r in f] for f in found] == [[1], [2, 3], []]
    assert queries == [("pc-09",), ("pc-01", "pc-02", "pc-03")]
