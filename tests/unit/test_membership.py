"""Collection refreshes are batched: at most once per collection per window."""

from __future__ import annotations

from shared.platform.retry import RetryPolicy
from shared.targets.adminservice import odata_string
from shared.targets.adminservice_membership import CollectionRefresher


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_refresh_at_most_once_per_collection_per_window():
    calls = []
    clock = Clock()
    refresher = CollectionRefresher(calls.append, enabled=True, window_seconds=60, clock=clock)
    for _ in range(50):
        refresher.changed("PS100123")
    refresher.changed("PS100124")
    refresher.flush()
    assert calls == ["PS100123", "PS100124"]
    refresher.changed("PS100123")
    clock.now = 30
    refresher.flush()
    assert calls == ["PS100123", "PS100124"]  # still inside the window: deferred
    clock.now = 61
    refresher.flush()
    assert calls == ["PS100123", "PS100124", "PS100123"]
    refresher.flush(force=True)
    assert len(calls) == 3  # nothing pending


def test_refresh_is_off_by_default_setting():
    calls = []
    refresher = CollectionRefresher(calls.append, enabled=False)
    refresher.changed("PS100123")
    refresher.flush(force=True)
    assert calls == []


def test_odata_literals_double_quotes():
    assert odata_string("PC01") == "'PC01'"
    assert odata_string("PC'01") == "'PC''01'"
    assert odata_string("' or 1 eq 1") == "''' or 1 eq 1'"


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(max_retry_after_seconds=30)
    assert policy.backoff(1, retry_after=7) == 7
    assert policy.backoff(1, retry_after=300) == 30
    assert 0.5 <= policy.backoff(1) <= 1.0
    assert policy.backoff(10) <= policy.max_backoff_seconds
