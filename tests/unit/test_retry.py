"""The one retry loop outside HTTP, and the one storage error translator."""

from __future__ import annotations

import logging

import pytest
from azure.core.exceptions import ResourceModifiedError, ServiceRequestError

from shared.errors import StorageError
from shared.platform.retry import RetryPolicy, any_of
from shared.platform.storage import storage_errors


class Flaky:
    """Fails with ``errors`` in turn, then answers ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_a_transient_failure_is_retried_after_the_backoff(caplog):
    waits: list[float] = []
    flaky = Flaky(TimeoutError("slow"), TimeoutError("slow"))
    policy = RetryPolicy(attempts=3, initial_backoff_seconds=0.1)
    with caplog.at_level(logging.WARNING, logger="shared.platform.retry"):
        result = policy.call(flaky, transient=any_of(TimeoutError), what="x", sleep=waits.append)
    assert result == "done" and flaky.calls == 3
    assert len(waits) == 2 and 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.2
    logged = [r.getMessage() for r in caplog.records]
    assert [m.split(" in ")[0] for m in logged] == [
        "x failed (TimeoutError), retry 1/2",
        "x failed (TimeoutError), retry 2/2",
    ]


def test_the_last_failure_is_raised_unchanged_when_the_attempts_are_spent():
    waits: list[float] = []
    flaky = Flaky(*(TimeoutError(str(n)) for n in range(5)))
    with pytest.raises(TimeoutError, match="2"):
        RetryPolicy(attempts=3).call(
            flaky, transient=any_of(TimeoutError), what="x", sleep=waits.append
        )
    assert flaky.calls == 3 and len(waits) == 2


def test_a_failure_that_is_not_transient_is_raised_at_once():
    waits: list[float] = []
    flaky = Flaky(ValueError("no"))
    with pytest.raises(ValueError, match="no"):
        RetryPolicy().call(flaky, transient=any_of(TimeoutError), what="x", sleep=waits.append)
    assert flaky.calls == 1 and waits == []


def test_conflicts_are_retried_soon_and_logged_quietly(caplog):
    waits: list[float] = []
    policy = RetryPolicy.for_conflicts(5)
    with caplog.at_level(logging.INFO, logger="shared.platform.retry"):
        policy.call(
            Flaky(ResourceModifiedError("changed")),
            transient=any_of(ResourceModifiedError),
            what="x",
            sleep=waits.append,
        )
    assert waits and max(waits) <= policy.max_backoff_seconds
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_storage_errors_name_what_failed_and_the_role_to_check():
    with pytest.raises(StorageError) as caught, storage_errors("read the audit table", "table"):
        raise ServiceRequestError("connection refused")
    message = str(caught.value)
    assert message.startswith("cannot read the audit table: ServiceRequestError")
    assert "AzureWebJobsStorage" in message and "Storage Table Data Contributor" in message


def test_storage_errors_let_through_what_the_caller_handles():
    with (
        pytest.raises(ResourceModifiedError),
        storage_errors("write", "table", let_through=(ResourceModifiedError,)),
    ):
        raise ResourceModifiedError("changed")
