"""The export run against the real local stack: PostgreSQL through pyodbc/ODBC, Azurite."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from devstack.datagen import M365_RULES, GeneratedStatusMessage, generate_workload
from shared.domain.clock import utc_now
from shared.errors import StorageError
from tests.conftest import StoreWrapper
from tests.export.conftest import ALL_PATHS, SOURCES

pytestmark = pytest.mark.stack

PROJECT = ("MsgType_Office365Upgrade", "projectInstalled")
VISIO = ("MsgType_Office365Upgrade", "visioInstalled")


def message(site="PS1", machine="PC01", strings=PROJECT, *, message_id=39997, minutes=0):
    rules = frozenset()
    if message_id == 39997 and strings[:2] == PROJECT:
        rules = frozenset({"project-64bit-reinstall"})
    elif message_id == 39997 and strings[:2] == VISIO:
        rules = frozenset({"visio-64bit-reinstall"})
    return GeneratedStatusMessage(
        site_code=site,
        machine_name=machine,
        time_utc=datetime(2026, 11, 20, 8, 0) + timedelta(minutes=minutes),
        message_id=message_id,
        insertion_strings=tuple(strings),
        expected_rules=rules,
    )


def insert(stack, messages):
    """Insert and return the expected (site, record, rule) keys, by construction."""
    ids = stack.site_db.insert_status_messages(messages)
    return Counter(
        (m.site_code, rid, rule)
        for m, rid in zip(messages, ids, strict=True)
        for rule in m.expected_rules
    )


def keys(requests):
    return Counter((r.site_code, r.record_id, r.rule) for r in requests)


class Clock:
    """A clock the test moves; the exporter asks it for every timestamp."""

    def __init__(self):
        self.now = utc_now()

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@ALL_PATHS
def test_ten_thousand_messages_over_two_sites(stack, app):
    """Through the real timer function: one run, then a second that finds nothing new."""
    workload = generate_workload(seed=2026, sites=("PS1", "PS2"), message_count=10_000)
    ids = stack.site_db.insert_status_messages(workload.messages)
    expected = Counter(
        (m.site_code, rid, rule)
        for m, rid in zip(workload.messages, ids, strict=True)
        for rule in m.expected_rules
    )
    assert len(expected) > 3000, "the workload should match a good share of its messages"
    assert {site for site, _, _ in expected} == {"PS1", "PS2"}

    app.export()
    requests = stack.drain()

    assert keys(requests) == expected  # exactly one per (matching message, rule), nothing else
    state, _ = stack.runtime().watermarks.load("PS1")
    assert state is not None
    assert state.high_record_id == max(
        rid
        for m, rid in zip(workload.messages, ids, strict=True)
        if m.site_code == "PS1" and m.message_id == 39997
    )

    # every field is the status message's own, hostile strings included, verbatim
    by_id = dict(zip(ids, workload.messages, strict=True))
    rules = {r["name"]: r for r in M365_RULES}
    for request in requests:
        source = by_id[request.record_id]
        assert request.machine_name == source.machine_name
        assert request.site_code == source.site_code
        assert request.time_utc.replace(tzinfo=None) == source.time_utc
        assert request.insertion_strings == {
            f"InsertionString{i + 1}": s
            for i, s in enumerate(source.insertion_strings)
            if s is not None
        }
        assert request.collection_id == rules[request.rule]["collection_id"]
        assert request.action == rules[request.rule]["action"]
    kinds = {by_id[r.record_id].kind for r in requests}
    assert any("hostile" in k for k in kinds), "hostile strings must be among the exported"

    app.export()
    assert stack.drain() == []


@ALL_PATHS
def test_late_commit_inside_the_overlap_is_exported_once(stack):
    expected = insert(stack, [message(machine=f"EARLY{n}", minutes=n) for n in range(5)])
    late = stack.site_db.begin_late_commit(message(machine="LATE01", minutes=6))
    expected_after = insert(
        stack, [message(machine=f"AFTER{n}", strings=VISIO, minutes=7 + n) for n in range(5)]
    )
    assert all(late.record_id < rid for _, rid, _ in expected_after)

    clock = Clock()
    stack.exporter(clock=clock).run()
    assert keys(stack.drain()) == expected + expected_after  # the late row is not visible yet

    late.commit()
    clock.advance(minutes=5)
    stack.exporter(clock=clock).run()
    assert keys(stack.drain()) == Counter({("PS1", late.record_id, "project-64bit-reinstall"): 1})

    clock.advance(minutes=5)
    stack.exporter(clock=clock).run()
    assert stack.drain() == []


@SOURCES
def test_the_overlap_window_is_bounded(stack):
    """Re-reading stops once a scan started an overlap after another ended: the state
    does not grow forever, and a row committing later than the overlap is not re-read."""
    insert(stack, [message(machine=f"PC{n}", minutes=n) for n in range(3)])
    late = stack.site_db.begin_late_commit(message(machine="TOOLATE", minutes=4))
    insert(stack, [message(machine="PC9", minutes=5)])
    clock = Clock()
    runtime = stack.runtime(EXPORT_OVERLAP_MINUTES="10")
    stack.exporter(clock=clock, runtime=runtime).run()
    clock.advance(minutes=11)
    stack.exporter(clock=clock, runtime=runtime).run()
    state, _ = runtime.watermarks.load("PS1")
    assert state is not None
    assert state.floor_record_id > late.record_id
    assert state.examined == []
    late.commit()
    stack.drain()
    clock.advance(minutes=1)
    assert stack.exporter(clock=clock, runtime=runtime).run().enqueued == 0


@SOURCES
def test_repeated_runs_export_only_what_is_new(stack):
    first = insert(stack, [message(machine=f"A{n}", minutes=n) for n in range(20)])
    exporter = stack.exporter()
    exporter.run()
    assert keys(stack.drain()) == first
    for _ in range(3):
        assert exporter.run().enqueued == 0
    second = insert(
        stack, [message(site="PS2", machine=f"B{n}", strings=VISIO, minutes=n) for n in range(7)]
    )
    exporter.run()
    assert keys(stack.drain()) == second
    assert exporter.run().enqueued == 0


@pytest.mark.parametrize("export_source", ["adminservice"], indirect=True)
def test_a_resource_id_the_message_carries_goes_on_the_queue(stack):
    """SMS_StatMsgWithInsStrings has a ResourceID ("may be NULL"): carried as
    message_resource_id for the remediation side to check, absent where null."""
    ids = stack.site_db.insert_status_messages([message(machine=f"R{n}") for n in range(3)])
    stack.adminservice.set_status_message_resource_id(ids[0], 16777219)
    stack.adminservice.set_status_message_resource_id(ids[2], 16777220)
    stack.exporter().run()
    carried = {r.record_id: r.message_resource_id for r in stack.drain()}
    assert carried == {ids[0]: 16777219, ids[1]: None, ids[2]: 16777220}


@SOURCES
def test_only_39997_messages_that_match_are_enqueued(stack):
    expected = insert(
        stack,
        [
            message(machine="INFO"),
            message(machine="WARN", message_id=39998),
            message(machine="ERR", message_id=39999),
            message(machine="OTHER", strings=("MsgType_Office365Upgrade", "somethingElse")),
            message(machine="SHORT", strings=("MsgType_Office365Upgrade",)),
        ],
    )
    report = stack.exporter().run()
    assert keys(stack.drain()) == expected
    assert len(expected) == 1
    assert report.sites["PS1"].read == 3  # the 39997 messages, matching or not


@SOURCES
def test_bounded_runs_share_the_budget_and_lose_nothing(stack):
    expected = insert(
        stack,
        [
            message(site=site, machine=f"{site}-{n}", minutes=n)
            for site in ("PS1", "PS2")
            for n in range(150)
        ],
    )
    runtime = stack.runtime(EXPORT_MAX_MESSAGES_PER_RUN="100")
    exporter = stack.exporter(runtime=runtime, page_size=40)
    first = exporter.run()
    assert first.bounded
    assert first.read == 100
    assert first.sites["PS1"].read > 0 and first.sites["PS2"].read > 0  # round-robin, no starvation
    runs = 1
    while exporter.run().read:
        runs += 1
    assert runs == 3
    assert keys(stack.drain()) == expected


@SOURCES
def test_start_time_limits_the_first_run(stack):
    insert(stack, [message(machine="BEFORE", minutes=0)])
    expected = insert(stack, [message(machine="AFTER", minutes=30)])
    runtime = stack.runtime(EXPORT_START_TIME="2026-11-20T08:15:00Z")
    stack.exporter(runtime=runtime).run()
    assert keys(stack.drain()) == expected


@SOURCES
def test_dry_run_sends_and_saves_nothing(stack):
    expected = insert(stack, [message(machine=f"D{n}") for n in range(4)])
    runtime = stack.runtime()
    report = stack.exporter(runtime=runtime).run(dry_run=True)
    assert keys(report.requests) == expected
    assert stack.drain() == []
    assert runtime.watermarks.load("PS1") == (None, None)
    stack.exporter(runtime=runtime).run()
    assert keys(stack.drain()) == expected


@SOURCES
def test_crash_between_enqueue_and_checkpoint_resends_and_never_loses(stack):
    expected = insert(stack, [message(machine=f"C{n}", minutes=n) for n in range(30)])
    runtime = stack.runtime()

    class StorageDownAtCheckpoint(StoreWrapper):
        def save_merged(self, state, etag, overlap):
            raise StorageError("simulated: storage unavailable while checkpointing")

    crashing = StorageDownAtCheckpoint(runtime.progress_store)
    with pytest.raises(StorageError):
        stack.exporter(runtime=runtime, progress_store=crashing).run()
    sent_before_crash = keys(stack.drain())
    assert sent_before_crash == expected  # enqueued, not checkpointed

    stack.exporter(runtime=runtime).run()
    assert keys(stack.drain()) == expected  # re-sent once: at-least-once, nothing lost
    assert stack.exporter(runtime=runtime).run().enqueued == 0


@SOURCES
def test_overlapping_runs_skip_nothing_and_send_once(stack):
    expected = insert(
        stack,
        [
            message(site=site, machine=f"{site}-{n}", minutes=n)
            for site in ("PS1", "PS2")
            for n in range(400)
        ],
    )
    exporters = [stack.exporter(page_size=50), stack.exporter(page_size=50)]
    barrier = threading.Barrier(2)
    reports = []

    def run(exporter):
        barrier.wait()
        reports.append(exporter.run())

    threads = [threading.Thread(target=run, args=(e,)) for e in exporters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stack.exporter().run()  # a later run picks up whatever a busy site left
    assert keys(stack.drain()) == expected


@SOURCES
def test_overlapping_writers_never_move_a_watermark_back(stack):
    """Without the site lease (it expired, say), both runs export; ETag merging keeps
    every row and the state only grows. Duplicates are allowed, losses are not."""
    expected = insert(stack, [message(machine=f"M{n}", minutes=n) for n in range(300)])

    class AlwaysGranted:
        def __init__(self, site_code):
            self.site_code = site_code

        def renew(self):
            return True

        def release(self):
            pass

    class NoLease(StoreWrapper):
        def lock(self, site_code):
            return AlwaysGranted(site_code)

    runtimes = [stack.runtime() for _ in range(2)]
    exporters = [
        stack.exporter(
            runtime=r, progress_store=NoLease(r.progress_store), page_size=20, checkpoint_seconds=0
        )
        for r in runtimes
    ]
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=lambda e=e: (barrier.wait(), e.run())) for e in exporters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = keys(stack.drain())
    assert set(sent) == set(expected)
    runtime = stack.runtime()
    state, _ = runtime.watermarks.load("PS1")
    assert state is not None
    assert state.high_record_id == max(rid for _, rid, _ in expected)
    assert all(state.is_examined(rid) for _, rid, _ in expected)
    assert stack.exporter(runtime=runtime).run().enqueued == 0


@SOURCES
def test_stale_state_write_merges_instead_of_overwriting(stack):
    runtime = stack.runtime()
    store = runtime.watermarks
    insert(stack, [message(machine=f"S{n}") for n in range(10)])
    stack.exporter(runtime=runtime).run()
    stale, stale_etag = store.load("PS1")
    assert stale is not None
    insert(stack, [message(machine=f"T{n}") for n in range(10)])
    stack.exporter(runtime=runtime).run()
    fresh, _ = store.load("PS1")
    assert fresh is not None and fresh.high_record_id > stale.high_record_id

    stale.mark_examined([stale.high_record_id + 10**6])
    saved, _ = store.save_merged(stale, stale_etag, timedelta(minutes=10))
    assert saved.high_record_id >= fresh.high_record_id
    reloaded, _ = store.load("PS1")
    assert reloaded == saved
    assert all(
        reloaded.is_examined(r) for first, last in fresh.examined for r in range(first, last + 1)
    )


@SOURCES
def test_a_backfill_resends_from_a_time_or_a_record_without_moving_the_watermark(stack):
    early = insert(stack, [message(machine=f"B{n}", minutes=n) for n in range(4)])
    late = insert(stack, [message(machine=f"C{n}", minutes=10 + n) for n in range(3)])
    runtime = stack.runtime()
    stack.exporter(runtime=runtime).run()
    assert keys(stack.drain()) == early + late
    before = runtime.watermarks.load("PS1")[0]

    since = datetime(2026, 11, 20, 8, 10, tzinfo=UTC)
    report = stack.exporter(runtime=runtime).backfill(since=since)
    assert keys(stack.drain()) == late  # the messages from 08:10 on, once more
    assert report.enqueued == sum(late.values())
    assert runtime.watermarks.load("PS1")[0] == before  # untouched

    newest = max(rid for _, rid, _ in late)
    added = insert(stack, [message(machine="D0", minutes=20)])
    stack.exporter(runtime=runtime).backfill(
        site_code="PS1", after_record_id=newest, update_watermark=True
    )
    assert keys(stack.drain()) == added
    state = runtime.watermarks.load("PS1")[0]
    assert state is not None and state.high_record_id == max(rid for _, rid, _ in added)
    stack.exporter(runtime=runtime).run()
    assert stack.drain() == []  # the backfill counted it as examined
