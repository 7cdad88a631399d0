"""The audit trail: exactly one recorded outcome per (status message, rule).

An Azure Table in the storage account. The row key is the request's identity
(site code, record ID, rule), and rows are created, never replaced: when a message is
delivered again, the first outcome stands and the redelivery is told so. The one
exception is ``held-rate-limit``, an outcome that waits for an operator: a held row
keeps the request, is marked released (or discarded) by ``cmremediate held``, and is
then replaced, once and ETag-conditionally, by the outcome of the released add.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.domain.clock import Clock, utc_now
from shared.domain.outcomes import HELD, RETRYABLE, Outcome, OutcomeKind
from shared.domain.requests import MAX_DECISIONS, RemediationRequest
from shared.errors import CmRemediateError, StorageError
from shared.platform.redaction import secrets
from shared.platform.retry import RetryPolicy, Sleep, any_of
from shared.platform.storage import (
    LazyTable,
    storage_error,
    storage_errors,
    table_name_beside,
)

#: Partition of messages that could not even be parsed (no site code to file them under).
UNPARSED_PARTITION: Final = "unparsed"


def audit_table_name(queue_name: str) -> str:
    """The audit table beside a queue: table names allow letters and digits only."""
    return table_name_beside(queue_name, "audit")


#: A held row changed since it was read (released, or settled by another delivery).
_CHANGED: Final = (ResourceModifiedError,)

#: Well under a table property's 32K UTF-16 units, whatever a rejected message held.
_TEXT_LIMIT: Final = 4096
#: A string property holds 64 KiB of UTF-16.
_PROPERTY_BYTES: Final = 64 * 1024


def _bounded(text: str) -> str:
    """Text fit for an audit row: no known secret (a service may echo one back in a
    refusal), and short enough for a table property."""
    text = secrets.redact(text)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def _keys(
    site_code: str, record_id: int | None, rule: str, dry_run: bool, decision: int = 1
) -> tuple[str, str]:
    """The row of one decision about one (status message, rule); dry runs are filed
    apart. The first decision's row key is ``<record>-<rule>``, a retry's
    ``<record>-<rule>~<decision>`` (rule names cannot hold ``~``)."""
    partition = f"{site_code}-dry-run" if dry_run else site_code
    row = f"{record_id}-{rule}"
    return partition, row if decision == 1 else f"{row}~{decision}"


def _from_entity(entity: dict[str, Any], *, new: bool) -> Outcome:
    record_id = entity.get("RecordId")
    return Outcome(
        kind=entity["Outcome"],
        reason=entity.get("Reason", ""),
        recorded_utc=entity["RecordedUtc"],
        site_code=entity.get("SiteCode"),
        record_id=int(record_id) if record_id else None,
        machine_name=entity.get("MachineName"),
        resource_id=entity.get("ResourceId"),
        message_resource_id=entity.get("MessageResourceId"),
        rule=entity.get("Rule"),
        collection_id=entity.get("CollectionId"),
        action=entity.get("Action"),
        dry_run=bool(entity.get("DryRun", False)),
        new=new,
        released=entity.get("ReleasedUtc") is not None and entity["Outcome"] == HELD,
        decided_by=entity.get("DecidedBy"),
        held_utc=entity.get("HeldUtc"),
        decision=int(entity.get("Decision", 1)),
        retried_as=entity.get("RetriedAs"),
        retried_by=entity.get("RetriedBy"),
        retried_utc=entity.get("RetriedUtc"),
    )


def _request_keys(
    request: RemediationRequest, dry_run: bool, decision: int | None = None
) -> tuple[str, str]:
    decided = request.decision if decision is None else decision
    return _keys(request.site_code, request.record_id, request.rule, dry_run, decided)


def _outcome_keys(outcome: Outcome) -> tuple[str, str]:
    assert outcome.site_code is not None and outcome.rule is not None, "an unparsed row"
    return _keys(
        outcome.site_code, outcome.record_id, outcome.rule, outcome.dry_run, outcome.decision
    )


@dataclass(frozen=True)
class LatestDecision:
    """The latest decision about one (status message, rule), which a retry or an expiry
    may follow: its outcome, the request it decided (kept on retryable rows only), the
    status message's time, and the row's ETag."""

    outcome: Outcome
    request: RemediationRequest | None
    time_utc: datetime | None
    etag: str


class AuditLog:
    """Creates outcome rows and reads them back. Create once, reuse."""

    def __init__(
        self,
        table: TableClient,
        *,
        attempts: int = 4,
        sleep: Sleep | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._rows = LazyTable(table, "audit")
        self._clock = clock
        self._attempts = attempts
        self._sleep = sleep

    def find(self, request: RemediationRequest, *, dry_run: bool = False) -> Outcome | None:
        """The outcome already recorded for this request, if any."""
        entity = self._rows.get(*_request_keys(request, dry_run))
        return None if entity is None else _from_entity(dict(entity), new=False)

    def kind_of(
        self, site_code: str, record_id: int, rule: str, *, dry_run: bool, decision: int = 1
    ) -> OutcomeKind | None:
        """The kind of outcome recorded for one decision about one (status message,
        rule), if any."""
        keys = _keys(site_code, record_id, rule, dry_run, decision)
        entity = self._rows.get(*keys, select=["Outcome"])
        if entity is None:
            return None
        kind: OutcomeKind = entity["Outcome"]
        return kind

    def record(
        self,
        request: RemediationRequest,
        kind: OutcomeKind,
        reason: str,
        *,
        resource_id: int | None = None,
        dry_run: bool = False,
    ) -> Outcome:
        """Record the outcome unless one exists; return whichever outcome stands."""
        partition, row = _request_keys(request, dry_run)
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": row,
            "RecordedUtc": self._clock(),
            "SiteCode": request.site_code,
            "RecordId": str(request.record_id),  # beyond Int64 in some tools: keep as text
            "StatusMessageUtc": request.time_utc,
            "MachineName": _bounded(request.machine_name),
            "Rule": request.rule,
            "CollectionId": request.collection_id,
            "Action": request.action,
            "Target": request.target,
            "Outcome": kind,
            "Reason": _bounded(reason),
            "DryRun": dry_run,
        }
        if resource_id is not None:
            entity["ResourceId"] = resource_id
        if request.message_resource_id is not None:
            entity["MessageResourceId"] = request.message_resource_id
        if request.decision > 1:
            entity["Decision"] = request.decision
            entity["RetryOf"] = _request_keys(request, dry_run, request.decision - 1)[1]
        if kind == HELD or kind in RETRYABLE:
            # Kept whole, so a release or a retry puts exactly this request back on the
            # queue. A retryable one too long for a table property is not kept: the
            # outcome matters more than the chance to retry it.
            kept = request.model_dump_json()
            if kind == HELD or len(kept.encode("utf-16-le")) <= _PROPERTY_BYTES:
                entity["Request"] = kept
        return self._create(entity)

    def settle(
        self,
        request: RemediationRequest,
        kind: OutcomeKind,
        reason: str,
        *,
        resource_id: int | None = None,
        dry_run: bool = False,
        decided_by: str | None = None,
    ) -> Outcome:
        """Replace a held row with its final outcome; whichever outcome stands is
        returned (another delivery or operator may have settled it first)."""
        partition, row = _request_keys(request, dry_run)

        def attempt() -> Outcome:
            found = self._rows.get(partition, row)
            if found is None:
                return self.record(request, kind, reason, resource_id=resource_id, dry_run=dry_run)
            current = dict(found)
            if current["Outcome"] != HELD:
                return _from_entity(current, new=False)
            entity = {
                **current,
                "Outcome": kind,
                "Reason": _bounded(reason),
                "HeldUtc": current["RecordedUtc"],
                "HeldReason": current.get("Reason", ""),
                "RecordedUtc": self._clock(),
            }
            entity.pop("Request", None)
            if resource_id is not None:
                entity["ResourceId"] = resource_id
            if decided_by is not None:
                entity["DecidedBy"] = decided_by
            # Changed under us (released, or settled): the retry looks again.
            with storage_errors("write the audit table", "table", let_through=_CHANGED):
                self._rows.client.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=found.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            return _from_entity(entity, new=True)

        try:
            return RetryPolicy.for_conflicts(self._attempts).call(
                attempt,
                transient=any_of(*_CHANGED),
                what="audit table: settling a held row",
                sleep=self._sleep,
            )
        except _CHANGED:
            raise StorageError("the held row kept changing; the message will be retried") from None

    def mark_released(self, outcome: Outcome, released_by: str) -> bool:
        """Mark a held row released; False when it is no longer held."""
        partition, row = _outcome_keys(outcome)
        current = self._rows.get(partition, row)
        if current is None or current["Outcome"] != HELD:
            return False
        fields = {"ReleasedUtc": self._clock(), "DecidedBy": released_by}
        return self._merge_unchanged(partition, row, fields, current.metadata["etag"])

    def held(self) -> list[tuple[Outcome, RemediationRequest]]:
        """Every request waiting for an operator, oldest first, with the request."""
        with storage_errors("read the audit table", "table"):
            entities = list(
                self._rows.client.query_entities("Outcome eq @held", parameters={"held": HELD})
            )
        found = [
            (_from_entity(dict(e), new=False), RemediationRequest.model_validate_json(e["Request"]))
            for e in entities
        ]
        return sorted(found, key=lambda pair: pair[0].recorded_utc)

    def latest_decisions(
        self,
        kinds: tuple[OutcomeKind, ...],
        *,
        record_id: int | None = None,
        rule: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
    ) -> list[LatestDecision]:
        """Rows of ``kinds`` (not dry runs) that are the latest decision about their
        (status message, rule): never followed, or followed by a decision whose row
        was never written (which is then asked for again). Oldest first."""
        # Spaces around the parentheses: the SDK finds "@name" between spaces.
        clauses = ["( " + " or ".join(f"Outcome eq @k{n}" for n in range(len(kinds))) + " )"]
        parameters: dict[str, Any] = {f"k{n}": kind for n, kind in enumerate(kinds)}
        clauses.append("DryRun eq false")
        if record_id is not None:
            clauses.append("RecordId eq @record")
            parameters["record"] = str(record_id)
        if rule is not None:
            clauses.append("Rule eq @rule")
            parameters["rule"] = rule
        if since is not None:
            clauses.append("RecordedUtc ge @since")
            parameters["since"] = since
        if before is not None:
            clauses.append("RecordedUtc lt @before")
            parameters["before"] = before
        with storage_errors("read the audit table", "table"):
            rows = list(
                self._rows.client.query_entities(" and ".join(clauses), parameters=parameters)
            )
        found: list[LatestDecision] = []
        for row in rows:
            outcome = _from_entity(dict(row), new=False)
            if outcome.retried_as is not None:
                successor = _keys(
                    str(outcome.site_code),
                    outcome.record_id,
                    str(outcome.rule),
                    False,
                    outcome.retried_as,
                )
                if self._rows.get(*successor, select=["Outcome"]) is not None:
                    continue  # decided again already: that decision is the latest
            kept = row.get("Request")
            request = RemediationRequest.model_validate_json(kept) if kept else None
            etag = str(row.metadata["etag"])
            found.append(LatestDecision(outcome, request, row.get("StatusMessageUtc"), etag))
        return sorted(found, key=lambda r: r.outcome.recorded_utc)

    def follow(self, row: LatestDecision, by: str) -> int | None:
        """The decision that follows ``row`` (a retry or an expiry): the one asked for
        already, whose row was never written, or the next one, linked from ``row`` now
        (``RetriedAs``; the row keeps its outcome); None when another operator or sweep
        linked it first."""
        outcome = row.outcome
        if outcome.retried_as is not None:
            return outcome.retried_as
        decision = outcome.decision + 1
        if decision > MAX_DECISIONS:
            raise CmRemediateError(f"decided {MAX_DECISIONS} times already")
        partition, key = _outcome_keys(outcome)
        fields = {"RetriedAs": decision, "RetriedBy": by, "RetriedUtc": self._clock()}
        return decision if self._merge_unchanged(partition, key, fields, row.etag) else None

    def _merge_unchanged(self, partition: str, row: str, fields: dict[str, Any], etag: str) -> bool:
        """Add ``fields`` to the row unless it changed since it was read (``etag``);
        False when it did, or is gone."""
        try:
            self._rows.client.update_entity(
                {"PartitionKey": partition, "RowKey": row, **fields},
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        except AzureError as error:
            raise storage_error("write the audit table", error, "table") from None
        return True

    def record_unparsed(self, body: bytes, message_id: str | None, reason: str) -> Outcome:
        """Record a message that could not be decoded at all (``rejected-input``)."""
        row = message_id or hashlib.sha256(body).hexdigest()[:40]
        entity: dict[str, Any] = {
            "PartitionKey": UNPARSED_PARTITION,
            "RowKey": re.sub(r"[/\\#?\x00-\x1f\x7f]", "_", row),
            "RecordedUtc": self._clock(),
            "Outcome": "rejected-input",
            "Reason": _bounded(reason),
            # A bounded, printable excerpt, so an operator can tell what arrived.
            "BodyExcerpt": body[:512].decode("utf-8", errors="replace"),
            "DryRun": False,
        }
        return self._create(entity)

    def _create(self, entity: dict[str, Any]) -> Outcome:
        """Create the row. The change it describes has already happened, so a failed
        write is tried again here (a redelivery could only say ``already-member``)."""
        tries = itertools.count(1)

        def attempt() -> Outcome:
            retried = next(tries) > 1
            try:
                self._rows.client.create_entity(entity)
                return _from_entity(entity, new=True)
            except ResourceExistsError:
                existing = self._rows.get(entity["PartitionKey"], entity["RowKey"])
                if existing is None:
                    raise  # gone again in between: the retry creates it after all
                # On a retry the row may be our own earlier attempt that did land.
                return _from_entity(dict(existing), new=retried)

        with storage_errors("write the audit table", "table"):
            return RetryPolicy(attempts=self._attempts).call(
                attempt, transient=any_of(AzureError), what="audit table write", sleep=self._sleep
            )

    def query(
        self,
        *,
        machine_name: str | None = None,
        collection_id: str | None = None,
        since: datetime | None = None,
    ) -> list[Outcome]:
        """Outcomes, newest first, filtered by machine, collection and time."""
        clauses: list[str] = []
        parameters: dict[str, Any] = {}
        if collection_id:
            clauses.append("CollectionId eq @collection")
            parameters["collection"] = collection_id
        if since:
            clauses.append("RecordedUtc ge @since")
            parameters["since"] = since
        with storage_errors("read the audit table", "table"):
            if clauses:
                entities = self._rows.client.query_entities(
                    " and ".join(clauses), parameters=parameters
                )
            else:
                entities = self._rows.client.list_entities()
            outcomes = [_from_entity(dict(e), new=False) for e in entities]
        if machine_name:
            # Machine names compare case-insensitively, which the table service cannot.
            wanted = machine_name.casefold()
            outcomes = [o for o in outcomes if (o.machine_name or "").casefold() == wanted]
        return sorted(outcomes, key=lambda o: o.recorded_utc, reverse=True)
