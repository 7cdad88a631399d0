"""Exactly one add per (collection, device), across threads and instances.

Before a target adds a device to a collection, the request claims the pair in a table
row (``PartitionKey`` the collection, ``RowKey`` the ResourceID): created if absent,
otherwise changed only ETag-conditionally, so two deliveries, on any instances, cannot
both hold it. The row names the claimant's (site, record, rule), and the outcome that
claimant records next settles it: ``added`` or ``already-member`` there means the
device is a member, so no second write per add is needed (the next request for the
pair reads that outcome, one row, only when it meets the claim). While a settled claim
stands (``MEMBERSHIP_CLAIM_HOURS``, the window before the site has evaluated the
collection), another status message for the same pair is ``already-member`` without a
single call to the target. Rows settled as ``added`` by earlier versions count the same.

A claimant that fails between claim and add marks its ``adding`` row abandoned, and a
claimant that stops (a crash) leaves it as it is: its own redelivery takes it back, and
anyone may take an abandoned one at once, or any after :data:`LEASE`. Either way the
taker is told it is *recovering*, and the target then looks at the direct rules
themselves before adding, because the add may have landed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.domain.membership import Claim, claim_owner
from shared.domain.outcomes import OutcomeKind
from shared.domain.requests import RemediationRequest
from shared.errors import ClaimBusy
from shared.platform.retry import RetryPolicy, Sleep, any_of
from shared.platform.storage import (
    CONFLICTS,
    LazyTable,
    storage_errors,
    table_name_beside,
    without_conflicts,
)

#: How long an ``adding`` claim keeps other requests waiting: far longer than one add
#: takes, retries included, and short enough that a vanished claimant does not block
#: the device for long.
LEASE: Final = timedelta(minutes=10)
_ADDING, _ADDED = "adding", "added"
#: The claimant's outcomes that leave the device a member: its claim is settled.
_MEMBER: Final = frozenset({"added", "already-member"})
#: The outcome recorded for (site code, record ID, rule, dry run), if any.
#: (site, record, rule, dry run, decision) -> the outcome recorded for that decision.
OutcomeOf = Callable[[str, int, str, bool, int], OutcomeKind | None]
#: Another instance wrote the row first: read it again soon.
_CONFLICT_ATTEMPTS = 10
#: Another request is adding the pair: it usually settles within a second.
_BUSY = RetryPolicy(
    attempts=5, initial_backoff_seconds=0.2, max_backoff_seconds=1.0, log_level=logging.INFO
)


def claims_table_name(queue_name: str) -> str:
    """The claims table beside a queue."""
    return table_name_beside(queue_name, "claims")


class TableMembershipClaims:
    """Claims in an Azure Table. Create once, reuse."""

    def __init__(
        self,
        table: TableClient,
        *,
        standing: timedelta,
        outcome_of: OutcomeOf,
        sleep: Sleep | None = None,
    ) -> None:
        self._rows = LazyTable(table, "membership claims")
        self._standing = standing
        self._outcome_of = outcome_of
        self._sleep = sleep

    def take(
        self, request: RemediationRequest, resource_id: int, now: datetime, *, dry_run: bool
    ) -> Claim:
        """Claim the pair for ``request``; ``busy`` only after waiting a few seconds for
        the request that holds it."""
        keys = _keys(request.collection_id, resource_id, dry_run)
        fresh: dict[str, Any] = {
            "PartitionKey": keys[0],
            "RowKey": keys[1],
            "State": _ADDING,
            "Owner": claim_owner(request),
            "Since": now,
            # Where the outcome that settles the claim will be recorded.
            "SiteCode": request.site_code,
            "RecordId": str(request.record_id),
            "Rule": request.rule,
            "Decision": request.decision,
        }
        last: list[Claim] = []

        def attempt() -> Claim:
            claim = self._conflict_free(lambda: self._take_once(fresh, now, dry_run), request)
            last[:] = [claim]
            if claim.state == "busy":
                raise ClaimBusy(f"{claim.owner} is adding the device since {claim.since}")
            return claim

        try:
            return _BUSY.call(
                attempt,
                transient=any_of(ClaimBusy),
                what=f"collection={request.collection_id} resource={resource_id}: waiting "
                "for the claim",
                sleep=self._sleep,
            )
        except ClaimBusy:
            return last[0]  # still busy after the wait: the caller looks again later

    def release(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """Drop this request's ``adding`` claim (nothing was added)."""
        self._change_own(
            request,
            resource_id,
            dry_run,
            lambda keys, etag: self._rows.client.delete_entity(
                *keys, etag=etag, match_condition=MatchConditions.IfNotModified
            ),
        )

    def abandon(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """This request failed in the middle (its message will be retried): anyone may
        take the claim over at once, as recovering, instead of waiting out the lease."""
        self._change_own(
            request,
            resource_id,
            dry_run,
            lambda keys, etag: self._rows.client.update_entity(
                {"PartitionKey": keys[0], "RowKey": keys[1], "Abandoned": True},
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            ),
        )

    def _change_own(
        self,
        request: RemediationRequest,
        resource_id: int,
        dry_run: bool,
        write: Callable[[tuple[str, str], str], object],
    ) -> None:
        """``write`` the pair's row if this request holds it ``adding``, unless someone
        else changed it meanwhile (then it is theirs to settle)."""
        keys = _keys(request.collection_id, resource_id, dry_run)
        found = self._rows.get(*keys)
        if found is None or found["Owner"] != claim_owner(request) or found["State"] != _ADDING:
            return
        gone = (ResourceModifiedError, ResourceNotFoundError)
        with (
            storage_errors("write the membership claims table", "table", let_through=gone),
            contextlib.suppress(*gone),
        ):
            write(keys, found.metadata["etag"])

    def forget(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """Drop the pair's claim, whoever holds it: the direct rule is gone."""
        with storage_errors("write the membership claims table", "table"):
            self._rows.client.delete_entity(*_keys(request.collection_id, resource_id, dry_run))

    # -- storage -------------------------------------------------------------------

    def _take_once(self, fresh: dict[str, Any], now: datetime, dry_run: bool) -> Claim:
        """A create when the pair has no row (the usual case: one write); otherwise one
        read, the holder's outcome when it may have one, and at most one conditional
        write. Raises a conflict to try again."""
        owner = str(fresh["Owner"])
        with storage_errors("write the membership claims table", "table", let_through=CONFLICTS):
            try:
                self._rows.client.create_entity(fresh)
                return Claim("taken", owner, now)
            except ResourceExistsError:
                pass
        found = self._rows.get(fresh["PartitionKey"], fresh["RowKey"])
        if found is None:
            # Dropped between the create and the read (released, forgotten): again.
            raise ResourceModifiedError("the claim changed between the create and the read")
        holder, since, state = str(found["Owner"]), found["Since"], found["State"]
        finished = False
        if state == _ADDING and holder != owner:
            outcome = self._holder_outcome(found, dry_run)
            if outcome in _MEMBER:
                state = _ADDED
            # Done without making it a member (held, refused) and not released: over.
            finished = outcome is not None
        if state == _ADDED and now - since < self._standing:
            return Claim("added", holder, since)
        resumed = state == _ADDING and holder == owner
        fresh_lease = now - since < LEASE and not found.get("Abandoned") and not finished
        if state == _ADDING and not resumed and fresh_lease:
            return Claim("busy", holder, since)
        # Its own earlier attempt's claim, a settled claim that has run its time (the
        # site has evaluated since), or an adding one whose claimant failed or vanished:
        # (re)take it, conditionally, so that of two takers one wins.
        with storage_errors("write the membership claims table", "table", let_through=CONFLICTS):
            self._rows.client.update_entity(
                fresh,
                mode=UpdateMode.REPLACE,
                etag=found.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        recovering = state == _ADDING
        return Claim("taken", owner, now, recovering=recovering, resumed=resumed)

    def _holder_outcome(self, found: Any, dry_run: bool) -> OutcomeKind | None:
        """The outcome the holder of an ``adding`` claim recorded, if any (rows written
        before claims named their request have none to look up)."""
        site, record, rule = found.get("SiteCode"), found.get("RecordId"), found.get("Rule")
        if not (site and record and rule):
            return None
        decision = int(found.get("Decision", 1))
        return self._outcome_of(str(site), int(record), str(rule), dry_run, decision)

    def _conflict_free(self, once: Callable[[], Claim], request: RemediationRequest) -> Claim:
        return without_conflicts(
            once,
            attempts=_CONFLICT_ATTEMPTS,
            what=f"collection={request.collection_id}: a membership claim",
            sleep=self._sleep,
        )


def _keys(collection_id: str, resource_id: int, dry_run: bool) -> tuple[str, str]:
    partition = f"{collection_id.upper()}-dry-run" if dry_run else collection_id.upper()
    return partition, str(int(resource_id))
