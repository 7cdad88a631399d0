"""Faults at the AdminService and Entra ID: every message still ends in exactly one
outcome once the fault passes, and nothing is added twice."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.requests import RemediationRequest
from shared.errors import StorageError
from shared.platform.retry import RetryPolicy
from shared.platform.tokens import REFUSAL_PAUSE_SECONDS
from tests.conftest import InvocationFailed
from tests.remediation import scenario
from tests.remediation.conftest import body_of, fixture
from tests.remediation.test_fixtures import adds

pytestmark = pytest.mark.stack

ADD_FIXTURES = ["01-add", "07-obsolete-and-active", "16-non-ascii-name", "08-remove"]


def deliver_until_done(remediation, names, *, max_deliveries=6):
    """Deliver like the host: a raising delivery is retried, up to maxDequeueCount."""
    failures = Counter()
    for name in names:
        for attempt in range(1, max_deliveries + 1):
            try:
                remediation.deliver(body_of(fixture(name)), message_id=name, dequeue_count=attempt)
                break
            except InvocationFailed as failed:
                if failed.type_name not in ("AdminServiceUnavailable", "TokenEndpointUnavailable"):
                    raise
                failures[name] += 1
        else:
            pytest.fail(f"{name} never completed")
    return failures


def assert_ledger(remediation, names):
    """Each named fixture has its outcome, its effect happened once, nothing else changed."""
    expected = {cid: set(m) for cid, m in scenario.INITIAL_MEMBERS.items()}
    for name in names:
        document = fixture(name)
        outcome = remediation.outcome(document["body"])
        assert outcome is not None and outcome.kind == document["expected_outcome"], name
        request = RemediationRequest.model_validate(document["body"])
        resource = scenario.EXPECTED_RESOURCE[request.machine_name]
        if outcome.kind == "added":
            expected.setdefault(request.collection_id, set()).add(resource)
        elif outcome.kind == "removed":
            expected[request.collection_id].discard(resource)
    assert all(count == 1 for count in adds(remediation.adminservice).values())
    for collection_id in scenario.COLLECTIONS:
        members = remediation.adminservice.direct_members(collection_id)
        assert members == expected.get(collection_id, set()), collection_id


@pytest.fixture(autouse=True)
def fast_retries(runtime_overrides):
    """The client's backoff waits for real; keep the storms short (the same 5 attempts)."""
    runtime_overrides(
        http_retry=RetryPolicy(
            attempts=5,
            initial_backoff_seconds=0.01,
            max_backoff_seconds=0.05,
            max_retry_after_seconds=0.2,
        )
    )


class Stopwatch:
    """A monotonic clock a test can move forward."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass at once."""
        self.ahead += seconds


@pytest.fixture
def pauses(runtime_overrides):
    """The runtime's clock of pauses, for the test to move (request it before the app)."""
    stopwatch = Stopwatch()
    runtime_overrides(monotonic=stopwatch)
    return stopwatch


def test_503_storm_then_recovery(remediation):
    remediation.adminservice.storm(503, count=12)
    failures = deliver_until_done(remediation, ADD_FIXTURES)
    assert sum(failures.values()) >= 1  # the storm really made deliveries fail
    assert_ledger(remediation, ADD_FIXTURES)


def test_429_with_retry_after_is_honoured(remediation):
    remediation.adminservice.storm(429, count=3, retry_after=1)
    started = datetime.now(UTC)
    deliver_until_done(remediation, ["01-add"])
    # three waits of Retry-After, capped at 0.2 s by the test's policy
    assert datetime.now(UTC) - started >= timedelta(seconds=0.5)
    assert remediation.adminservice.count_calls(status=429) == 3
    assert_ledger(remediation, ["01-add"])


def test_connection_resets_are_retried(remediation):
    remediation.adminservice.reset_connections_next(3)
    deliver_until_done(remediation, ADD_FIXTURES)
    assert_ledger(remediation, ADD_FIXTURES)


def test_token_expired_mid_batch_gets_one_fresh_token(remediation):
    deliver_until_done(remediation, ["01-add"])
    issued = remediation.entra.token_count
    # every token issued so far is now expired for the AdminService
    remediation.adminservice.expire_tokens_issued_before(datetime.now(UTC) + timedelta(seconds=1))
    import time

    time.sleep(1.1)
    deliver_until_done(remediation, ["07-obsolete-and-active", "16-non-ascii-name"])
    assert remediation.entra.token_count == issued + 1  # one fresh token, then reused
    assert_ledger(remediation, ["01-add", "07-obsolete-and-active", "16-non-ascii-name"])


def test_token_endpoint_down_then_back(remediation):
    remediation.entra.set_down(True)
    try:
        with pytest.raises(InvocationFailed, match=r"^TokenEndpointUnavailable: "):
            remediation.deliver(body_of(fixture("01-add")), message_id="down")
        assert remediation.outcome(fixture("01-add")["body"]) is None  # nothing recorded
    finally:
        remediation.entra.set_down(False)
    deliver_until_done(remediation, ["01-add"])
    assert_ledger(remediation, ["01-add"])


def test_untrusted_certificate_is_refused_and_nothing_recorded(remediation):
    remediation.adminservice.set_untrusted_certificate(True)
    try:
        with pytest.raises(InvocationFailed, match="TLS certificate was refused"):
            remediation.deliver(body_of(fixture("01-add")), message_id="tls")
    finally:
        remediation.adminservice.set_untrusted_certificate(False)
    assert remediation.outcome(fixture("01-add")["body"]) is None
    assert adds(remediation.adminservice) == Counter()


def test_duplicate_answer_mode_ok_is_also_idempotent(remediation):
    """Re-adding an existing rule is unverified: run the other answer too."""
    request = RemediationRequest.model_validate(fixture("01-add")["body"])
    remediation.adminservice.set_direct_members("PS100123", {16777302, 16777301})
    remediation.deliver(request.to_json())
    outcome = remediation.outcome(request)
    assert outcome is not None and outcome.kind == "already-member"
    assert adds(remediation.adminservice) == Counter()
    assert scenario.EXPECTED_RESOURCE["PC-ADD01"] in remediation.adminservice.direct_members(
        "PS100123"
    )


def test_token_endpoint_errors_are_retryable_not_recorded(remediation):
    remediation.entra.fail_next(1, status=503)
    with pytest.raises(InvocationFailed, match=r"^TokenEndpointUnavailable: "):
        remediation.deliver(body_of(fixture("01-add")), message_id="entra-503")
    assert remediation.outcome(fixture("01-add")["body"]) is None


@pytest.mark.parametrize(
    "remediation", [{"ADMINSERVICE_PASSWORD": "wrong-password"}], indirect=True
)
def test_a_refused_password_is_not_tried_again_by_every_message(pauses, remediation):
    """Smart lockout counts every wrong password: one sign-in, then a pause."""

    def sign_ins():
        return [
            r for r in remediation.entra.requests[before:] if r.username == scenario.SERVICE_ACCOUNT
        ]

    before = len(remediation.entra.requests)
    tries = []
    for n, name in enumerate(["01-add", "07-obsolete-and-active", "16-non-ascii-name"]):
        with pytest.raises(InvocationFailed, match=r"^TokenError: ") as caught:
            remediation.deliver(body_of(fixture(name)), message_id=f"locked-{n}")
        tries.append(str(caught.value))
    assert [r.outcome for r in sign_ins()] == ["invalid_grant"]
    assert "not asked again for" in tries[1] and "restart the app" in tries[1]
    assert "ADMINSERVICE_PASSWORD" in tries[0] + tries[1]  # the hint survives the pause
    for name in ["01-add", "07-obsolete-and-active", "16-non-ascii-name"]:
        assert remediation.outcome(fixture(name)["body"]) is None  # retried later, not decided

    pauses.advance(REFUSAL_PAUSE_SECONDS)  # the pause is over
    with pytest.raises(InvocationFailed, match=r"^TokenError: ") as again:
        remediation.deliver(body_of(fixture("01-add")), message_id="locked-again")
    # asked again (MSAL itself may still answer from its 60 s cache of HTTP 400s)
    assert "not asked again" not in str(again.value)


def test_an_add_whose_outcome_was_lost_is_recorded_as_added_on_redelivery(
    make_remediation, monkeypatch
):
    """The add landed, then the audit write failed (the outcome that would settle the
    claim): the message is retried, takes its own claim back as recovering, finds the
    rule and still records ``added`` (by this very message), not a second add."""
    remediation = make_remediation()
    audit = remediation.runtime.audit
    original = audit.record
    failures = []

    def record_fails_once(*args, **kwargs):
        if not failures:
            failures.append(args)
            raise StorageError("audit table: connection reset (test)")
        return original(*args, **kwargs)

    monkeypatch.setattr(audit, "record", record_fails_once)
    body = body_of(fixture("01-add"))
    with pytest.raises(InvocationFailed, match=r"^StorageError"):
        remediation.deliver(body, message_id="lost", dequeue_count=1)
    remediation.deliver(body, message_id="lost", dequeue_count=2)
    outcome = remediation.outcome(fixture("01-add")["body"])
    assert outcome is not None and outcome.kind == "added"
    assert "added by an earlier attempt" in outcome.reason
    assert adds(remediation.adminservice) == Counter({("PS100123", 16777301): 1})
