"""One queue message in, exactly one recorded outcome out.

The order of decisions, each logged with site code, record ID, machine and collection:

1. decode the message (contract violation → ``rejected-input``);
2. an outcome already recorded for it? Then this is a redelivery: done;
3. validate against the *current* rules file and the input rules (``rejected-input``);
4. resolve the machine name to one ResourceID (``ambiguous``; not found yet → try again
   after RESOLVE_RETRY_DELAY_SECONDS until RESOLVE_RETRY_HOURS, then ``unknown-device``);
   a ResourceID the status message carried must be that one, or it is ``ambiguous``
   (it never picks a record on its own);
5. claim the (collection, device) pair, so one add is made across threads and instances:
   a pair cm-remediate added within MEMBERSHIP_CLAIM_HOURS is ``already-member`` without a
   call; a pair another request is adding right now is looked at again shortly;
6. an add past MAX_ADDS_PER_COLLECTION_PER_HOUR is held (``held-rate-limit``) until an
   operator releases or discards it (``cmremediate held``); a released request skips
   the guard;
7. change membership (``added``/``already-member``/``removed``/``not-member``, or
   ``target-refused`` when the target says no for good).

Transient failures (AdminService, Entra ID, storage or site database down, bad
credentials an operator must fix) raise: the host retries the message and finally moves
it to the poison queue, from where it can be requeued. Nothing completes silently.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from shared.domain.clock import Clock, utc_now
from shared.domain.devices import choose, netbios_problem
from shared.domain.membership import Claim, MembershipChange, claim_owner
from shared.domain.outcomes import HELD, Outcome, OutcomeKind
from shared.domain.ports import (
    DeviceSource,
    Guard,
    MembershipClaims,
    MembershipTarget,
    OutcomeStore,
    RequestSender,
)
from shared.domain.requests import RemediationRequest, decode
from shared.domain.rules import RuleSet
from shared.domain.status_messages import INSERTION_STRING_MAX_LENGTH
from shared.errors import AddHeld, CmRemediateError, QueueMessageError, TargetRefused
from shared.platform.telemetry import telemetry
from shared.remediation.guard import Decision, GuardSlot

log = logging.getLogger(__name__)

_END_OF_TIME = datetime.max.replace(tzinfo=UTC)
_ROUTINE = frozenset({"added", "already-member", "removed", "not-member", HELD})


def count_outcome(outcome: Outcome) -> None:
    """One more recorded outcome of its kind, for the metrics; a redelivery that found
    its outcome recorded already is not counted again."""
    if outcome.new:
        attributes: dict[str, str | bool] = {
            "kind": outcome.kind,
            "rule": outcome.rule or "",
            "collection_id": outcome.collection_id or "",
            "site_code": outcome.site_code or "",
            "dry_run": outcome.dry_run,
        }
        telemetry.record("cmremediate.outcomes", 1, attributes)


def _fields(request: RemediationRequest) -> str:
    return (
        f"site={request.site_code} record={request.record_id} "
        f"machine={request.machine_name!r} collection={request.collection_id} rule={request.rule}"
    )


class Remediator:
    """Handles remediation requests. Create once per process, reuse for every message."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        devices: DeviceSource,
        targets: Mapping[str, MembershipTarget],
        outcomes: OutcomeStore,
        retry_sender: RequestSender,
        resolve_retry: timedelta,
        resolve_retry_delay_seconds: int,
        guard: Guard[Decision] | None = None,
        claims: MembershipClaims | None = None,
        busy_retry_seconds: int = 30,
        dry_run: bool = False,
        clock: Clock = utc_now,
    ) -> None:
        self._rules = rules
        self._devices = devices
        self._targets = targets
        self._outcomes = outcomes
        self._retry_sender = retry_sender
        self._resolve_retry = resolve_retry
        self._retry_delay = resolve_retry_delay_seconds
        self._guard = guard
        self._claims = claims
        self._busy_retry_seconds = busy_retry_seconds
        self._dry_run = dry_run
        self._clock = clock

    def handle(self, body: bytes | str, *, message_id: str | None = None) -> Outcome | None:
        """Process one queue message body; None means "not decided yet, requeued".
        Raises (after logging with the message's fields) when it should be retried."""
        # surrogatepass: a lone surrogate becomes bytes that fail to decode (rejected-input)
        raw = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else body
        try:
            request = decode(raw)
        except QueueMessageError as error:
            outcome = self._outcomes.record_unparsed(raw, message_id, str(error))
            count_outcome(outcome)
            log.warning("queue message %s rejected-input: %s", message_id or "-", error)
            return outcome

        try:
            return self._decide(request)
        except CmRemediateError as error:
            log.warning(
                "%s: not decided, the message will be retried: %s",
                _fields(request),
                error,
                extra=request.log_attributes(),
            )
            raise

    def _decide(self, request: RemediationRequest) -> Outcome | None:
        existing = self._outcomes.find(request, dry_run=self._dry_run)
        if existing is not None and not existing.released:
            waiting = " (waiting for `cmremediate held release`)" if existing.kind == HELD else ""
            log.info(
                "%s: already recorded as %s%s; redelivery ignored",
                _fields(request),
                existing.kind,
                waiting,
                extra=request.log_attributes(),
            )
            return existing
        # Past here an outcome already recorded is a held add an operator released.
        released = existing is not None
        if existing is not None:
            log.info(
                "%s: held add released by %s",
                _fields(request),
                existing.decided_by,
                extra=request.log_attributes(),
            )

        problem = self._input_problem(request)
        if problem is not None:
            return self._record(request, "rejected-input", problem, settle=released)

        resolution = choose(request.machine_name, self._devices.find_devices(request.machine_name))
        if resolution.kind == "ambiguous":
            return self._record(request, "ambiguous", resolution.reason, settle=released)
        if resolution.kind == "not-found" or resolution.resource_id is None:
            # A client's clock may run ahead; the export time (ours) caps it.
            start = min(request.time_utc, request.exported_utc)
            # A time at the calendar's end is forged; give up on it at once.
            give_up_at = (
                start + self._resolve_retry
                if start < _END_OF_TIME - self._resolve_retry
                else self._clock()
            )
            if self._clock() < give_up_at:
                self._retry_sender.send_later(request, self._retry_delay)
                log.info(
                    "%s: %s; trying again in %ds (until %s)",
                    _fields(request),
                    resolution.reason,
                    self._retry_delay,
                    give_up_at.isoformat(),
                    extra=request.log_attributes(),
                )
                return None
            hours = self._resolve_retry.total_seconds() / 3600
            return self._record(
                request,
                "unknown-device",
                f"{resolution.reason}; gave up {hours:g} h after the status message",
                settle=released,
            )

        resource_id = resolution.resource_id
        reported = request.message_resource_id
        if reported is not None and reported != resource_id:
            return self._record(
                request,
                "ambiguous",
                f"the status message carries ResourceID {reported}, but the name resolves to "
                f"{resource_id} ({resolution.reason}); not guessing which device sent it",
                settle=released,
            )
        claim = self._claim(request, resource_id)
        if claim is not None and claim.state == "busy":
            self._retry_sender.send_later(request, self._busy_retry_seconds)
            log.info(
                "%s: %s is adding resource %s right now; looking again in %ds",
                _fields(request),
                claim.owner,
                resource_id,
                self._busy_retry_seconds,
                extra=request.log_attributes(),
            )
            return None
        if claim is not None and claim.state == "added" and request.action == "add":
            # This very request added it when its outcome could not be written: it is
            # still the one that added.
            own = claim.owner == claim_owner(request)
            return self._record(
                request,
                "added" if own else "already-member",
                f"{'an earlier attempt of this message' if own else 'cm-remediate'} added the "
                f"device at {claim.since.isoformat()} ({claim.owner}); {resolution.reason}",
                resource_id=resource_id,
                settle=released,
            )
        rule = self._rules.named(request.rule)
        assert rule is not None  # _input_problem refused a request without one
        slot = GuardSlot(
            None if released else self._guard,
            request,
            self._clock,
            dry_run=self._dry_run,
            limit=rule.max_adds_per_hour,
        )
        change = MembershipChange(
            request,
            resource_id,
            resolution.named_records,
            before_add=slot,
            recovering=claim is not None and claim.recovering,
            added_by_us=claim is not None and claim.state == "added",
        )
        try:
            kind, reason = self._targets[request.target].apply(change, dry_run=self._dry_run)
        except AddHeld:
            assert slot.decision is not None  # only the slot raises AddHeld
            self._unclaim(request, resource_id)
            return self._hold(request, slot.decision, resource_id)
        except TargetRefused as error:
            slot.give_back()
            self._unclaim(request, resource_id)
            return self._record(
                request, "target-refused", str(error), resource_id=resource_id, settle=released
            )
        except CmRemediateError:
            self._abandon(request, resource_id)
            raise
        if kind == "already-member" and claim is not None and claim.resumed:
            # An earlier attempt of this very message added it before it failed.
            kind, reason = "added", f"added by an earlier attempt ({reason})"
        if kind != "added":
            slot.give_back()
        if request.action == "remove":
            self._forget_claim(request, resource_id)
        # An add's claim is settled by the outcome recorded now (see claims).
        return self._record(
            request,
            kind,
            f"{reason}; {resolution.reason}",
            resource_id=resource_id,
            settle=released,
        )

    def _claim(self, request: RemediationRequest, resource_id: int) -> Claim | None:
        if self._claims is None:
            return None
        return self._claims.take(request, resource_id, self._clock(), dry_run=self._dry_run)

    def _unclaim(self, request: RemediationRequest, resource_id: int) -> None:
        if self._claims is not None:
            self._claims.release(request, resource_id, dry_run=self._dry_run)

    def _abandon(self, request: RemediationRequest, resource_id: int) -> None:
        """Retried later; meanwhile whoever comes next may take the pair over (and look
        at the rules first: this attempt's add may have landed). Without the mark the
        lease runs out all the same, so a failure to write it is only logged."""
        if self._claims is None:
            return
        try:
            self._claims.abandon(request, resource_id, dry_run=self._dry_run)
        except CmRemediateError as error:
            log.warning(
                "%s: could not give up the claim: %s",
                _fields(request),
                error,
                extra=request.log_attributes(),
            )

    def _forget_claim(self, request: RemediationRequest, resource_id: int) -> None:
        """The direct rule is gone: a later add must not be told it is a member."""
        if self._claims is not None:
            self._claims.forget(request, resource_id, dry_run=self._dry_run)

    def _hold(self, request: RemediationRequest, decision: Decision, resource_id: int) -> Outcome:
        collection = request.collection_id
        resumes = decision.next_slot_utc.isoformat() if decision.next_slot_utc else "-"
        if decision.first_hold:
            # One alarm per episode, across instances (the guard's row remembers it).
            log.warning(
                "%s: BLAST-RADIUS GUARD: %d adds to collection %s in the last hour reached "
                "the limit of %d (the rule's max_adds_per_hour, else "
                "MAX_ADDS_PER_COLLECTION_PER_HOUR). Further adds to it are held, not made: "
                "a flood of spoofed status messages looks like this. Review them with "
                "`cmremediate held list --collection %s`, then add them with "
                "`cmremediate held release --collection %s` or drop them with "
                "`cmremediate held discard --collection %s`. New adds resume from %s.",
                _fields(request),
                decision.adds_in_window,
                collection,
                decision.limit,
                collection,
                collection,
                collection,
                resumes,
                extra=request.log_attributes(),
            )
        return self._record(
            request,
            HELD,
            f"{decision.adds_in_window} adds to {collection} in the last hour reached "
            f"the limit of {decision.limit}; held for `cmremediate held release`",
            resource_id=resource_id,
        )

    def run_deferred(self) -> None:
        """The targets' deferred work that is due (collection refreshes, at most one
        per collection and minute) and the guard's unused slots; a host calls it
        between messages."""
        if self._guard is not None:
            self._guard.flush(self._clock())
        for target in self._targets.values():
            target.run_deferred()

    def _input_problem(self, request: RemediationRequest) -> str | None:
        """Why this request must not be acted on, or None."""
        rule = self._rules.named(request.rule)
        if rule is None:
            return f"rule {request.rule!r} is not in the rules file"
        if (rule.collection_id, rule.action, rule.target) != (
            request.collection_id,
            request.action,
            request.target,
        ):
            return (
                f"the message says {request.action} {request.collection_id} via {request.target}, "
                f"but rule {rule.name!r} says {rule.action} {rule.collection_id} via {rule.target}"
            )
        if request.target not in self._targets:
            return f"target {request.target!r} is not configured"
        problem = netbios_problem(request.machine_name)
        if problem is not None:
            return problem
        for key, value in request.insertion_strings.items():
            if len(value) > INSERTION_STRING_MAX_LENGTH:
                return (
                    f"{key} is {len(value)} characters long; a client sends at most "
                    f"{INSERTION_STRING_MAX_LENGTH}"
                )
        return None

    def _record(
        self,
        request: RemediationRequest,
        kind: OutcomeKind,
        reason: str,
        *,
        resource_id: int | None = None,
        settle: bool = False,
    ) -> Outcome:
        write = self._outcomes.settle if settle else self._outcomes.record
        outcome = write(request, kind, reason, resource_id=resource_id, dry_run=self._dry_run)
        # A held add is reported once, loudly, by _hold; every other one is routine.
        level = logging.INFO if kind in _ROUTINE else logging.WARNING
        log.log(
            level,
            "%s resource=%s: %s%s (%s)",
            _fields(request),
            resource_id or "-",
            outcome.kind,
            " [dry run]" if self._dry_run else "",
            outcome.reason,
            extra={**request.log_attributes(), "outcome": outcome.kind},
        )
        count_outcome(outcome)
        return outcome
