"""Decide again: ``cmremediate retry`` puts a decided request back on the queue as the
next decision about its (status message, rule).

An ``ambiguous``, ``unknown-device`` or ``target-refused`` outcome stands for good once
recorded: redeliveries of the same request are told so. When its cause is gone (the
duplicate record cleaned up, the device discovered, the refusal fixed), an operator
asks for decision n + 1. The old row keeps its outcome and gains a link to the new
decision (``RetriedAs``, ETag-conditional, so of two operators one wins); the new
row, written by the queue function as for any request, names the one it follows
(``RetryOf``). A retry whose new row never appeared (the send failed) is sent again
by the next ``retry``; the queue function decides each decision once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain.clock import Clock, utc_now
from shared.domain.outcomes import RETRYABLE, OutcomeKind
from shared.domain.ports import RequestSender
from shared.errors import CmRemediateError
from shared.remediation.audit_log import AuditLog, LatestDecision

log = logging.getLogger(__name__)


@dataclass
class RetryReport:
    """What ``retry`` did: the decisions asked for, and what it left alone and why."""

    sent: list[tuple[LatestDecision, int]] = field(default_factory=list)
    skipped: list[tuple[LatestDecision, str]] = field(default_factory=list)


class Retries:
    """The operator's side of deciding again."""

    def __init__(self, audit: AuditLog, sender: RequestSender, clock: Clock = utc_now) -> None:
        self._audit = audit
        self._sender = sender
        self._clock = clock

    def select(
        self,
        *,
        kinds: tuple[OutcomeKind, ...] = RETRYABLE,
        record_id: int | None = None,
        machine_name: str | None = None,
        rule: str | None = None,
        since: datetime | None = None,
    ) -> list[LatestDecision]:
        """The latest decisions of ``kinds`` that match, oldest first."""
        unknown = set(kinds) - set(RETRYABLE)
        if unknown:
            raise ValueError(
                f"only {', '.join(RETRYABLE)} can be decided again, not {', '.join(unknown)}"
            )
        rows = self._audit.latest_decisions(kinds, record_id=record_id, rule=rule, since=since)
        if machine_name:
            wanted = machine_name.casefold()
            rows = [r for r in rows if (r.outcome.machine_name or "").casefold() == wanted]
        return rows

    def retry(self, rows: list[LatestDecision], *, by: str) -> RetryReport:
        """Ask for the next decision about each row's request."""
        report = RetryReport()
        for row in rows:
            outcome = row.outcome
            if row.request is None:
                report.skipped.append((row, "recorded without its request (an older version)"))
                continue
            try:
                decision = self._audit.follow(row, by)
            except CmRemediateError as error:
                report.skipped.append((row, str(error)))
                continue
            if decision is None:
                report.skipped.append((row, "changed since it was read (retried by someone else)"))
                continue
            request = row.request.model_copy(
                update={"decision": decision, "exported_utc": self._clock()}
            )
            self._sender.send([request])
            log.info(
                "site=%s record=%s machine=%r collection=%s rule=%s: %s decided again "
                "(decision %d) at the request of %s",
                request.site_code,
                request.record_id,
                request.machine_name,
                request.collection_id,
                request.rule,
                outcome.kind,
                decision,
                by,
                extra=request.log_attributes(),
            )
            report.sent.append((row, decision))
        return report
