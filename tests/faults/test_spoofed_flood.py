"""A flood of status messages (spoofed, or a rollout bigger than expected) meets the
blast-radius guard: no collection takes more than MAX_ADDS_PER_COLLECTION_PER_HOUR
adds, the rest are held (kept, one warning per collection), and after an operator
releases them the ledger holds like in every other scenario."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import pytest

from tests.faults.conftest import Scenario

pytestmark = [pytest.mark.faults, pytest.mark.stack]

LIMIT = 4


def test_flood_is_held_at_the_limit_then_released(
    scenario: Callable[..., Scenario], caplog: pytest.LogCaptureFixture
) -> None:
    s = scenario(seed=801)
    runtime = s.app_runtime(MAX_ADDS_PER_COLLECTION_PER_HOUR=str(LIMIT))
    assert s.export().enqueued == s.ledger.requests
    needed = Counter(collection for collection, _ in s.ledger.expected_adds())
    assert all(n > LIMIT for n in needed.values()), needed  # the flood must overflow

    with caplog.at_level(logging.WARNING, logger="shared.remediation.remediator"):
        report = s.process()

    made = s.adminservice.successful_adds()
    assert Counter(collection for collection, _ in made.elements()) == {c: LIMIT for c in needed}
    # Held are exactly the adds not made yet; a device already in is never held.
    held = runtime.held.pending()
    assert len(held) == report.outcomes["held-rate-limit"]
    assert {(h.request.collection_id, h.outcome.resource_id) for h in held} == (
        s.ledger.expected_adds() - set(made)
    )
    alarms = [r.getMessage() for r in caplog.records if "BLAST-RADIUS GUARD" in r.getMessage()]
    assert sorted(a.split(" to collection ")[1].split()[0] for a in alarms) == sorted(needed)

    released = runtime.held.release(by="fault-suite")
    assert len(released.done) == report.outcomes["held-rate-limit"]
    s.figures.requeued += len(released.done)
    s.process()
    assert runtime.held.pending() == []
    s.assert_ledger(runtime)
