"""Memberships that end: the direct rules cm-remediate added for a rule with
``remove_after_days`` are removed that many days after the add.

Only an ``added`` outcome is expired: a direct rule this app made, for the ResourceID
it recorded (the machine name is not resolved again, so a renamed or re-imaged device
is never confused with another). The removal is the next decision about the same
(status message, rule): the ``added`` row stays and is marked ``RetriedAs`` n + 1
first (ETag-conditional, so of two sweeps one removes), then the target removes the
rule idempotently, then decision n + 1 is recorded (``removed``, or ``not-member``
when someone removed it already). A sweep that stops in between is finished by the
next one. Removals go through the blast-radius guard like adds: past its limit the
rest wait for the next sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.domain.clock import Clock, utc_now
from shared.domain.membership import MembershipChange
from shared.domain.outcomes import Outcome
from shared.domain.ports import MembershipClaims, MembershipTarget
from shared.domain.requests import RemediationRequest
from shared.domain.rules import Rule, RuleSet
from shared.errors import AddHeld, CmRemediateError
from shared.remediation.audit_log import AuditLog, LatestDecision
from shared.remediation.guard import BlastRadiusGuard, GuardSlot
from shared.remediation.remediator import count_outcome

log = logging.getLogger(__name__)


@dataclass
class ExpiryReport:
    """What one sweep of one rule did."""

    rule: str
    due: int = 0
    #: The recorded outcomes of the removals (``removed`` or ``not-member``).
    done: list[Outcome] = field(default_factory=list)
    #: Left for the next sweep, with why (held by the guard, another sweep's, failed).
    left: list[tuple[LatestDecision, str]] = field(default_factory=list)


class Expiry:
    """Finds the adds whose time is up and removes them. Create once, reuse."""

    def __init__(
        self,
        audit: AuditLog,
        rules: RuleSet,
        targets: Mapping[str, MembershipTarget],
        guard: BlastRadiusGuard | None,
        claims: MembershipClaims | None,
        clock: Clock = utc_now,
    ) -> None:
        self._audit = audit
        self._rules = rules
        self._targets = targets
        self._guard = guard
        self._claims = claims
        self._clock = clock

    def expiring_rules(self) -> list[Rule]:
        """The rules whose adds end (``remove_after_days``)."""
        return [r for r in self._rules.rules if r.remove_after_days is not None]

    def due(self, rule: Rule, *, older_than: timedelta | None = None) -> list[LatestDecision]:
        """The adds of ``rule`` older than ``older_than`` (default: its
        ``remove_after_days``) that are still the latest decision, oldest first."""
        if older_than is None:
            if rule.remove_after_days is None:
                raise ValueError(f"rule {rule.name!r} has no remove_after_days: say --older-than")
            older_than = timedelta(days=rule.remove_after_days)
        before = self._clock() - older_than
        return self._audit.latest_decisions(("added",), rule=rule.name, before=before)

    def sweep(self) -> list[ExpiryReport]:
        """Expire what is due for every rule with ``remove_after_days`` (the timer)."""
        return [
            self.expire(rule, self.due(rule), by="expiry sweep") for rule in self.expiring_rules()
        ]

    def expire(self, rule: Rule, rows: list[LatestDecision], *, by: str) -> ExpiryReport:
        """Remove the direct rule of each row, each once, through the guard."""
        report = ExpiryReport(rule.name, due=len(rows))
        for row in rows:
            try:
                outcome = self._expire_one(rule, row, by)
            except AddHeld:
                left = len(rows) - len(report.done) - len(report.left)
                log.warning(
                    "rule %s: the blast-radius guard stopped the expiry of collection %s; "
                    "%d removal(s) wait for the next sweep",
                    rule.name,
                    rule.collection_id,
                    left,
                )
                report.left += [(r, "held by the guard") for r in rows[len(rows) - left :]]
                break
            except CmRemediateError as error:
                report.left.append((row, str(error)))
                continue
            if outcome is None:
                report.left.append((row, "another sweep or operator took it first"))
            else:
                report.done.append(outcome)
        return report

    def _expire_one(self, rule: Rule, row: LatestDecision, by: str) -> Outcome | None:
        previous = row.outcome
        if previous.resource_id is None:
            raise CmRemediateError("the add's row names no device")
        decision = self._audit.follow(row, f"expiry ({by})")
        if decision is None:
            return None
        request = _removal(rule, row, decision, self._clock())
        slot = GuardSlot(
            self._guard, request, self._clock, dry_run=False, limit=rule.max_adds_per_hour
        )
        slot()  # AddHeld past the limit: the rest wait
        change = MembershipChange(
            request, previous.resource_id, named_records=1, recovering=True, added_by_us=True
        )
        try:
            kind, reason = self._targets[request.target].apply(change, dry_run=False)
        except CmRemediateError:
            slot.give_back()
            raise
        if kind != "removed":
            slot.give_back()
        if self._claims is not None:
            self._claims.forget(request, previous.resource_id, dry_run=False)
        days = (self._clock() - previous.recorded_utc) / timedelta(days=1)
        outcome = self._audit.record(
            request,
            kind,
            f"{reason}; the add of {previous.recorded_utc:%Y-%m-%d %H:%M} UTC expired after "
            f"{days:.1f} days (remove_after_days {rule.remove_after_days}, {by})",
            resource_id=previous.resource_id,
        )
        count_outcome(outcome)
        log.info(
            "site=%s record=%s machine=%r collection=%s rule=%s resource=%s: %s (expiry, "
            "decision %d)",
            request.site_code,
            request.record_id,
            request.machine_name,
            request.collection_id,
            request.rule,
            previous.resource_id,
            outcome.kind,
            decision,
            extra={**request.log_attributes(), "outcome": outcome.kind},
        )
        return outcome


def _removal(rule: Rule, row: LatestDecision, decision: int, now: datetime) -> RemediationRequest:
    """The request that removes what ``row`` added: the add's own fields, ``remove``."""
    added = row.outcome
    assert added.site_code is not None and added.record_id is not None
    return RemediationRequest.model_construct(
        site_code=added.site_code,
        record_id=added.record_id,
        message_id=39997,
        time_utc=row.time_utc or added.recorded_utc,
        machine_name=added.machine_name or "",
        insertion_strings={},
        rule=rule.name,
        collection_id=added.collection_id or rule.collection_id,
        action="remove",
        target=rule.target,
        exported_utc=now.astimezone(UTC),
        message_resource_id=None,
        decision=decision,
    )
