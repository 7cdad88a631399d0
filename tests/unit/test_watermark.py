"""The watermark algebra: floor, de-duplication and merging, without storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.export.watermark import Scan, SiteWatermark

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
OVERLAP = timedelta(minutes=10)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def scan(start: float, end: float, reached: int) -> Scan:
    return Scan(started_utc=minutes(start), ended_utc=minutes(end), reached_record_id=reached)


def test_examined_rows_are_skipped_and_others_are_not():
    state = SiteWatermark(site_code="PS1")
    state.mark_examined([5, 3, 9])
    assert [r for r in range(1, 11) if state.is_examined(r)] == [3, 5, 9]
    assert state.high_record_id == 9


def test_floor_stays_until_a_scan_starts_an_overlap_after_another_ended():
    state = SiteWatermark(site_code="PS1")
    state.mark_examined([1, 2, 3])
    state.complete_scan(scan(0, 1, 3), OVERLAP)
    state.mark_examined([4, 5])
    state.complete_scan(scan(5, 6, 5), OVERLAP)  # started 4 minutes after the first ended
    assert state.floor_record_id == 0
    assert state.examined == [(1, 5)]
    state.complete_scan(scan(11, 12, 5), OVERLAP)  # 10 minutes after the first ended
    assert state.floor_record_id == 3
    assert state.examined == [(4, 5)]
    assert state.is_examined(2)  # below the floor: never read again


def test_floor_never_passes_what_the_later_scan_read():
    state = SiteWatermark(site_code="PS1")
    state.mark_examined(range(1, 101))
    state.complete_scan(scan(0, 1, 100), OVERLAP)
    # a bounded run that only read up to 40 cannot vouch for rows 41..100
    state.complete_scan(scan(20, 21, 40), OVERLAP)
    assert state.floor_record_id == 40


def test_a_scan_with_nothing_new_keeps_the_floor_moving():
    state = SiteWatermark(site_code="PS1")
    state.mark_examined([10, 20])
    state.complete_scan(scan(0, 1, 20), OVERLAP)
    state.complete_scan(scan(30, 31, 20), OVERLAP)
    assert state.floor_record_id == 20
    assert state.examined == []
    assert state.high_record_id == 20


def test_merge_takes_the_union_and_never_moves_back():
    ours = SiteWatermark(site_code="PS1")
    ours.mark_examined([1, 2, 3])
    theirs = ours.model_copy(deep=True)
    ours.mark_examined([4])
    theirs.mark_examined([5, 6])
    theirs.complete_scan(scan(0, 1, 6), OVERLAP)
    theirs.complete_scan(scan(15, 16, 6), OVERLAP)
    assert theirs.floor_record_id == 6

    merged = ours.merge(theirs, OVERLAP)
    assert merged.floor_record_id == 6
    assert merged.high_record_id == 6
    assert all(merged.is_examined(r) for r in range(1, 7))
    # merging is symmetric in what it keeps
    other_way = theirs.merge(ours, OVERLAP)
    assert other_way.floor_record_id == merged.floor_record_id
    assert other_way.examined == merged.examined


def test_scans_history_stays_bounded():
    state = SiteWatermark(site_code="PS1")
    for n in range(500):
        state.mark_examined([n + 1])
        # every run is bounded at its own row and nothing gets older than the overlap
        state.complete_scan(scan(n * 0.01, n * 0.01 + 0.005, n + 1), OVERLAP)
    assert len(state.scans) <= 200


def test_examined_record_ids_are_kept_as_ranges():
    state = SiteWatermark(site_code="PS1")
    state.mark_examined(range(1, 100_001))  # a dense site: one range
    state.mark_examined([100_003, 100_002, 100_010])
    assert state.examined == [(1, 100_000), (100_002, 100_003), (100_010, 100_010)]
    assert state.examined_count() == 100_003
    assert not state.is_examined(100_001) and state.is_examined(100_002)
    assert state.is_examined(100_003) and not state.is_examined(100_004)
    assert state.is_examined(100_010) and not state.is_examined(100_011)
    assert len(state.model_dump_json()) < 500
    state.mark_examined([100_001, *range(100_004, 100_010)])
    assert state.examined == [(1, 100_010)]  # the gaps filled: the ranges join


def test_the_floor_cuts_ranges_it_passes_through():
    state = SiteWatermark(site_code="PS1")
    state.mark_examined([*range(1, 11), *range(20, 31)])
    state.complete_scan(scan(0, 1, 25), OVERLAP)
    state.complete_scan(scan(11, 12, 25), OVERLAP)
    assert state.floor_record_id == 25
    assert state.examined == [(26, 30)]


def test_a_version_1_state_with_a_list_of_record_ids_still_loads():
    document = {
        "schema_version": 1,
        "site_code": "PS1",
        "floor_record_id": 2,
        "high_record_id": 9,
        "examined": [3, 4, 5, 9],
        "scans": [],
    }
    state = SiteWatermark.model_validate(document)
    assert state.examined == [(3, 5), (9, 9)]
    assert [r for r in range(1, 11) if state.is_examined(r)] == [1, 2, 3, 4, 5, 9]
    again = SiteWatermark.model_validate_json(state.model_dump_json())
    assert again.examined == state.examined and again.schema_version == 2
