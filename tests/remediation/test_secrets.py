"""No secret or token appears in any log line, outcome or exception text."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import InvocationFailed
from tests.remediation import scenario
from tests.remediation.conftest import ALL_FIXTURES, body_of, fixture

pytestmark = pytest.mark.stack


def test_known_secrets_never_reach_the_logs(remediation, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = remediation.capture_tokens()
    for name in ALL_FIXTURES:
        if name == "04-unknown-then-discovered":
            continue
        remediation.deliver(body_of(fixture(name)), message_id=name)
    assert tokens, "the pipeline must have used at least one token"
    secrets = [scenario.SERVICE_PASSWORD, *tokens]
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for outcome in remediation.runtime.audit.query():
        text += f"\n{outcome.reason} {outcome.machine_name}"
    assert "requesting a new token" in text  # the logs were really captured
    for secret in secrets:
        assert secret not in text
        assert secret[:24] not in text


def test_refused_token_errors_carry_no_token(remediation):
    tokens = remediation.capture_tokens()
    remediation.adminservice.expire_tokens_issued_before(scenario.FIXED_NOW.replace(year=2100))
    with pytest.raises(InvocationFailed, match=r"^AdminServiceRefused: ") as caught:
        remediation.deliver(body_of(fixture("01-add")), message_id="401")
    message = str(caught.value)
    assert "rejected a fresh token" in message
    assert len(tokens) == 2  # the cached one, then one fresh one
    for token in tokens:
        assert token[:24] not in message
