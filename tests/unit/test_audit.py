"""The audit log keeps the first outcome and retries a write that failed after a change."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError, ServiceResponseError

from shared.errors import StorageError
from shared.platform.redaction import secrets
from shared.remediation.audit_log import AuditLog, audit_table_name
from tests.helpers import make_request


class FlakyTable:
    """A table whose first writes time out; ``lands`` says whether they still landed."""

    table_name = "t"

    def __init__(self, failures: int, *, lands: bool):
        self.rows: dict[tuple[str, str], dict] = {}
        self.failures = failures
        self.lands = lands

    def create_table(self):
        raise ResourceExistsError("exists")

    def create_entity(self, entity):
        key = (entity["PartitionKey"], entity["RowKey"])
        if key in self.rows:
            raise ResourceExistsError("exists")
        if self.failures:
            self.failures -= 1
            if self.lands:
                self.rows[key] = dict(entity)
            raise ServiceResponseError("Read timed out")
        self.rows[key] = dict(entity)

    def get_entity(self, partition, row):
        return self.rows[(partition, row)]


REQUEST = make_request(rule="r")


@pytest.mark.parametrize("lands", [False, True])
def test_a_failed_write_is_retried_and_the_outcome_stands(lands):
    table = FlakyTable(failures=2, lands=lands)
    audit = AuditLog(table, sleep=lambda s: None)  # type: ignore[arg-type]
    outcome = audit.record(REQUEST, "added", "direct rule added", resource_id=16777301)
    assert outcome.kind == "added"
    assert outcome.new is True
    assert len(table.rows) == 1
    assert audit.record(REQUEST, "already-member", "redelivery").kind == "added"


def test_a_write_that_keeps_failing_raises_for_the_host_to_retry():
    audit = AuditLog(FlakyTable(failures=10, lands=False), attempts=3, sleep=lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="cannot write the audit table"):
        audit.record(REQUEST, "added", "x")


def test_table_names_follow_the_queue():
    assert audit_table_name("cm-remediation") == "cmremediationaudit"
    assert audit_table_name("t0123-remediation").isalnum()


def test_rows_hold_no_known_secret_and_stay_within_a_property():
    secret = "Echoed-Back-Secret-7f3a9c"
    secrets.add(secret)
    table = FlakyTable(failures=0, lands=False)
    audit = AuditLog(table)  # type: ignore[arg-type]
    outcome = audit.record(
        REQUEST, "target-refused", f"the web service refused: 400 {{'key': '{secret}'}}"
    )
    row = next(iter(table.rows.values()))
    assert secret not in row["Reason"] and secret not in outcome.reason
    assert "the web service refused: 400" in row["Reason"]

    long_name = REQUEST.model_copy(update={"machine_name": "A" * 33_000, "record_id": 7})
    audit.record(long_name, "rejected-input", "x" * 40_000)
    row = table.rows[("PS1", "7-r")]
    assert len(row["MachineName"]) <= 4096 and len(row["Reason"]) <= 4096


class UnreadableTable(FlakyTable):
    """The row exists, but reading it back fails."""

    def get_entity(self, partition, row):
        raise ServiceResponseError("Read timed out")


def test_an_existing_row_that_cannot_be_read_is_a_storage_error():
    table = UnreadableTable(failures=0, lands=False)
    audit = AuditLog(table, sleep=lambda s: None)  # type: ignore[arg-type]
    audit.record(REQUEST, "added", "first")
    with pytest.raises(StorageError, match="cannot read the audit table"):
        audit.record(REQUEST, "already-member", "redelivery")
