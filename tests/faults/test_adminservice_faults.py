"""Faults at the AdminService and at Entra ID while the queue is processed: the export
timer fills the queue, the host's queue listener feeds ``apply_remediation`` (through
the worker, several invocations at once) while the fault hits, the fault heals,
poisoned messages are requeued, and the ledger must hold."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from shared.app.runtime import Runtime
from shared.queue.options import QueueOptions
from tests.faults.conftest import Processed, Scenario, Trigger

pytestmark = [pytest.mark.faults, pytest.mark.stack]

MakeScenario = Callable[..., Scenario]


def member_outcomes(report: Processed) -> int:
    """Outcomes of requests that went through the AdminService so far."""
    return report.outcomes["added"] + report.outcomes["already-member"]


def export_all(scenario: Scenario) -> Runtime:
    """Export the whole workload (no fault yet) with a tick of the timer; the runtime
    is the one the functions use."""
    runtime = scenario.app_runtime()
    assert scenario.export().enqueued == scenario.ledger.requests
    return runtime


def storm_outlasting_retries(s: Scenario) -> int:
    """A number of 503s that must exhaust some request's retries, however many
    invocations the host runs at once: each running request can swallow at most
    ``attempts - 1`` of them without failing, and the host's queue listener runs at
    most ``batchSize + newBatchThreshold`` invocations at once."""
    options = QueueOptions.from_host_json(s.app_root)
    in_flight = options.batch_size + options.new_batch_threshold
    attempts = s.tuning.retry.attempts
    return in_flight * (attempts - 1) + attempts


def test_503_storm_mid_batch(scenario: MakeScenario) -> None:
    s = scenario(seed=601)
    runtime = export_all(s)
    count = storm_outlasting_retries(s)
    storm = Trigger[Processed](
        lambda r: member_outcomes(r) >= 3, lambda: s.adminservice.storm(503, count=count)
    )
    report = s.process(progress=storm)
    assert storm.fired and s.adminservice.count_calls(status=503) == count
    assert report.failed >= 1  # the storm outlasted some messages' retries
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_429_with_retry_after_is_waited_for(scenario: MakeScenario) -> None:
    s = scenario(seed=602)
    runtime = export_all(s)
    throttle = Trigger[Processed](
        lambda r: member_outcomes(r) >= 3,
        lambda: s.adminservice.storm(429, count=3, retry_after=1),
    )
    report = s.process(progress=throttle)
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
    # Four slow answers to adds (one add's, or spread over the adds running at once):
    # the client times out on each, while the add lands on the server 0.5 s later.
    slow = Trigger[Processed](
        lambda r: member_outcomes(r) >= 3,
        lambda: s.adminservice.slow_next(4, 2.0, route="AddMembershipRule"),
    )
    s.process(progress=slow)
    assert slow.fired
    # Whichever of an add and its re-send lands second meets the rule (a 500). The slow
    # one may land after the processing is over: the server logs it when it answers.
    deadline = time.monotonic() + 10
    while s.adminservice.count_calls("AddMembershipRule", status=500) < 1:
        assert time.monotonic() < deadline, "no add was re-sent"
        time.sleep(0.05)
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_connection_resets(scenario: MakeScenario) -> None:
    s = scenario(seed=604)
    runtime = export_all(s)
    resets = Trigger[Processed](
        lambda r: member_outcomes(r) >= 3, lambda: s.adminservice.reset_connections_next(12)
    )
    s.process(progress=resets)
    assert resets.fired and s.adminservice.count_calls(status=0) == 12
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_untrusted_certificate_poisons_then_requeue_heals(scenario: MakeScenario) -> None:
    s = scenario(seed=605)
    runtime = export_all(s)
    s.adminservice.set_untrusted_certificate(True)
    try:
        report = s.process()
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
        report = s.process()
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
        # Tokens are stamped in whole seconds (iat): at the next whole second, every
        # token issued before it expires, the cached one included, while every token
        # issued from then on is valid. Invocations keep running meanwhile.
        now = time.time()
        boundary = math.floor(now) + 1
        time.sleep(boundary - now + 0.01)
        issued.append(s.entra.token_count)
        s.adminservice.expire_tokens_issued_before(datetime.fromtimestamp(boundary, UTC))

    expiry = Trigger[Processed](lambda r: member_outcomes(r) >= 3, expire)
    report = s.process(progress=expiry)
    assert expiry.fired
    # The cached token was refused: once for each request that carried it, at most one
    # per invocation running at the time (several run at once under the host).
    refused = s.adminservice.count_calls(status=401)
    assert 1 <= refused <= report.max_in_flight
    # Each refusal cost one fresh token, accepted at once; then tokens were reused.
    assert s.entra.token_count == issued[0] + refused
    assert report.failed == 0
    s.settle(runtime)
    s.assert_ledger(runtime)
