"""The queue function under the host's queue semantics, through the worker: a bad
configuration fails every delivery naming the problem, the host retries and poisons,
and nothing is lost: once fixed, ``poison requeue`` brings every message back to its
one outcome."""

from __future__ import annotations

import contextlib
import json

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.app.runtime import reset_runtime
from tests.remediation import scenario
from tests.remediation.conftest import body_of, fixture, install_fixed_clock_runtime

pytestmark = pytest.mark.stack

ADDS = ["01-add", "07-obsolete-and-active", "16-non-ascii-name"]


def enqueue(remediation, bodies, *, encoded=True):
    policy = TextBase64EncodePolicy() if encoded else None
    with QueueClient.from_connection_string(
        remediation.stack.azurite.connection_string,
        remediation.runtime.settings.remediation_queue,
        message_encode_policy=policy,
    ) as client:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        for body in bodies:
            client.send_message(body)


def test_a_bad_setting_poisons_nothing_is_lost_and_requeue_completes(make_remediation, monkeypatch):
    remediation = make_remediation()
    monkeypatch.delenv("ADMINSERVICE_PASSWORD")
    reset_runtime()
    enqueue(remediation, [body_of(fixture(name)) for name in ADDS])

    with remediation.app.listener(visibility_timeout_seconds=0) as listener:
        broken = listener.drain_until_empty()
    # Without a configuration the function cannot park the message itself: the host
    # poisons it (its copy expires after seven days; health names the problem meanwhile).
    assert broken.succeeded == 0
    assert broken.failed == len(ADDS) * listener.options.max_dequeue_count
    assert broken.poisoned == len(ADDS)
    for invocation in broken.invocations:
        assert invocation.error is not None
        assert invocation.error.startswith("ConfigurationError: ")
        assert "ADMINSERVICE_PASSWORD: required" in invocation.error
    assert remediation.adminservice.calls == []

    monkeypatch.setenv("ADMINSERVICE_PASSWORD", scenario.SERVICE_PASSWORD)
    runtime = install_fixed_clock_runtime()
    remediation.runtime = runtime
    assert runtime.poison.requeue() == len(ADDS)
    with remediation.app.listener() as listener:
        fixed = listener.drain_until_empty()
    assert (fixed.succeeded, fixed.failed, fixed.poisoned) == (len(ADDS), 0, 0)
    for name in ADDS:
        outcome = remediation.outcome(fixture(name)["body"])
        assert outcome is not None and outcome.kind == fixture(name)["expected_outcome"], name


def test_a_message_that_is_not_base64_is_poisoned_without_an_invocation(remediation):
    enqueue(remediation, [json.dumps(fixture("01-add")["body"])], encoded=False)
    with remediation.app.listener() as listener:
        report = listener.drain_until_empty()
    assert (report.invocations, report.poisoned, report.undecodable) == ([], 1, 1)
    # the operator's requeue re-encodes it, and it completes
    assert remediation.runtime.poison.requeue() == 1
    with remediation.app.listener() as listener:
        assert listener.drain_until_empty().succeeded == 1
    outcome = remediation.outcome(fixture("01-add")["body"])
    assert outcome is not None and outcome.kind == "added"


def test_deliveries_run_side_by_side_within_the_hosts_bound(remediation):
    bodies = []
    for n in range(60):
        body = {**fixture("09-remove-not-member")["body"], "record_id": 2**56 + 1000 + n}
        bodies.append(json.dumps(body))
    enqueue(remediation, bodies)
    with remediation.app.listener() as listener:
        report = listener.drain_until_empty()
        bound = listener.options.batch_size + listener.options.new_batch_threshold
    assert report.succeeded == 60
    assert 1 < report.max_in_flight <= bound
    # Each invocation has an ID of its own (one that failed under load and was retried
    # is one more invocation, not a reused ID).
    assert len({i.invocation_id for i in report.invocations}) == len(report.invocations)


def test_a_failing_last_attempt_is_parked_where_it_does_not_expire(one_http_attempt, remediation):
    """The host's own poison copy expires after seven days; the function parks the
    message itself on the host's last attempt, never to expire, and nothing is lost."""
    remediation.adminservice.set_down(True)
    enqueue(remediation, [body_of(fixture("01-add"))])
    with remediation.app.listener(visibility_timeout_seconds=0) as listener:
        report = listener.drain_until_empty()
        attempts = listener.options.max_dequeue_count
    assert [i.ok for i in report.invocations] == [False] * (attempts - 1) + [True]
    assert all("AdminServiceUnavailable" in (i.error or "") for i in report.invocations[:-1])
    assert report.poisoned == 0  # the host had nothing to poison: the function parked it
    with QueueClient.from_connection_string(
        remediation.stack.azurite.connection_string, remediation.runtime.settings.poison_queue
    ) as poison:
        [parked] = list(poison.peek_messages(max_messages=32))
    assert parked.expires_on is not None and parked.expires_on.year == 9999
    assert remediation.outcome(fixture("01-add")["body"]) is None  # not decided: waiting

    remediation.adminservice.set_down(False)
    assert remediation.runtime.poison.requeue() == 1
    with remediation.app.listener() as listener:
        assert listener.drain_until_empty().succeeded == 1
    outcome = remediation.outcome(fixture("01-add")["body"])
    assert outcome is not None and outcome.kind == "added"
