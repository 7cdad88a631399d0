"""Faults at the AdminService and at Entra ID while the queue is processed: the real
export fills the queue, the real QueueProcessor drains it while the fault hits, the
fault heals, poisoned messages are requeued, and the ledger must hold."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.processing import ProcessReport
from shared.runtime import Runtime
from tests.faults.conftest import Scenario, Trigger

pytestmark = [pytest.mark.faults, pytest.mark.stack]

MakeScenario = Callable[..., Scenario]


def member_outcomes(report: ProcessReport) -> int:
    """Outcomes of requests that went through the AdminService so far."""
    return report.outcomes["added"] + report.outcomes["already-member"]


def export_all(scenario: Scenario) -> Runtime:
    """Export the whole workload (no fault yet); the runtime then processes the queue."""
    runtime = scenario.runtime()
    report = scenario.exporter(runtime).run()
    assert report.enqueued == scenario.ledger.requests
    return runtime


def test_503_storm_mid_batch(scenario: MakeScenario) -> None:
    s = scenario(seed=601)
    runtime = export_all(s)
    storm = Trigger[ProcessReport](
        lambda r: member_outcomes(r) >= 3, lambda: s.adminservice.storm(503, count=30)
    )
    report = s.process(runtime, progress=storm)
    assert storm.fired and s.adminservice.count_calls(status=503) == 30
    assert report.failed >= 1  # the storm outlasted some messages' retries
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_429_with_retry_after_is_waited_for(scenario: MakeScenario) -> None:
    s = scenario(seed=602)
    runtime = export_all(s)
    throttle = Trigger[ProcessReport](
        lambda r: member_outcomes(r) >= 3,
        lambda: s.adminservice.storm(429, count=3, retry_after=1),
    )
    report = s.process(runtime, progress=throttle)
    assert throttle.fired and s.adminservice.count_calls(status=429) == 3
    # Each 429 was waited out for its Retry-After, not the client's own backoff, and
    # the fourth attempt went through: no message failed.
    assert s.tuning.waits == [1.0, 1.0, 1.0]
    assert report.failed == 0
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_slow_adds_land_after_the_client_timed_out(scenario: MakeScenario) -> None:
    s = scenario(seed=603)
    s.tuning.timeout = (5.0, 1.5)
    runtime = export_all(s)
    # Four slow answers: every attempt the client may make at one add times out except
    # the fifth, while the first one's add lands on the server 0.5 s after its timeout.
    slow = Trigger[ProcessReport](
        lambda r: member_outcomes(r) >= 3,
        lambda: s.adminservice.slow_next(4, 2.0, route="AddMembershipRule"),
    )
    s.process(runtime, progress=slow)
    assert slow.fired
    assert s.adminservice.count_calls("AddMembershipRule", status=500) >= 1  # re-sent adds
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_connection_resets(scenario: MakeScenario) -> None:
    s = scenario(seed=604)
    runtime = export_all(s)
    resets = Trigger[ProcessReport](
        lambda r: member_outcomes(r) >= 3, lambda: s.adminservice.reset_connections_next(12)
    )
    s.process(runtime, progress=resets)
    assert resets.fired and s.adminservice.count_calls(status=0) == 12
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_untrusted_certificate_poisons_then_requeue_heals(scenario: MakeScenario) -> None:
    s = scenario(seed=605)
    runtime = export_all(s)
    s.adminservice.set_untrusted_certificate(True)
    try:
        report = s.process(runtime)
    finally:
        s.adminservice.set_untrusted_certificate(False)
    # The client refused the certificate: no request reached the service, every request
    # that needed it failed maxDequeueCount times and went to the poison queue, and no
    # outcome was recorded for any of them.
    needs_service = s.ledger.adminservice_requests()
    assert s.adminservice.calls == []
    assert report.poisoned == len(needs_service) > 0
    assert s.depths() == (0, len(needs_service))
    recorded = {(o.site_code, o.record_id, o.rule) for o in runtime.audit.query()}
    assert recorded.isdisjoint(needs_service)
    s.settle(runtime)
    assert s.figures.requeued == len(needs_service)
    s.assert_ledger(runtime)


def test_token_endpoint_down_then_back(scenario: MakeScenario) -> None:
    s = scenario(seed=606)
    runtime = export_all(s)
    s.entra.set_down(True)
    try:
        report = s.process(runtime)
    finally:
        s.entra.set_down(False)
    needs_service = s.ledger.adminservice_requests()
    assert s.adminservice.calls == []  # no token, no call
    assert report.poisoned == len(needs_service) > 0
    s.settle(runtime)
    assert s.figures.requeued == len(needs_service)
    s.assert_ledger(runtime)


def test_tokens_expire_mid_batch(scenario: MakeScenario) -> None:
    s = scenario(seed=607)
    runtime = export_all(s)
    issued: list[int] = []

    def expire() -> None:
        issued.append(s.entra.token_count)
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        s.adminservice.expire_tokens_issued_before(cutoff)
        # Tokens are stamped in whole seconds: the next one must be issued after the cutoff.
        time.sleep((cutoff - datetime.now(UTC)).total_seconds() + 0.05)

    expiry = Trigger[ProcessReport](lambda r: member_outcomes(r) >= 3, expire)
    report = s.process(runtime, progress=expiry)
    assert expiry.fired
    assert s.adminservice.count_calls(status=401) == 1  # the cached token, refused once
    assert s.entra.token_count == issued[0] + 1  # one fresh token, then reused
    assert report.failed == 0
    s.settle(runtime)
    s.assert_ledger(runtime)
