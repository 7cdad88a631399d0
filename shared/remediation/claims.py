"""Exactly one add per (collection, device), across threads and instances.

Before a target adds a device to a collection, the request claims the pair in a table
row (``PartitionKey`` the collection, ``RowKey`` the ResourceID): created if absent,
otherwise changed only ETag-conditionally, so two deliveries, on any instances, cannot
both hold it. The claim is settled as ``added`` once the device is a member. While that
stands (``MEMBERSHIP_CLAIM_HOURS``, the window before the site has evaluated the
collection), another status message for the same pair is ``already-member`` without a
single call to the target.

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
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.domain.membership import Claim, claim_owner
from shared.domain.requests import RemediationRequest
from shared.errors import ClaimBusy
from shared.platform.retry import RetryPolicy, Sleep, any_of
from shared.platform.storage import (
    CONFLICTS,
    ensure_table,
    storage_errors,
    table_name_beside,
    without_conflicts,
)

#: How long an ``adding`` claim keeps other requests waiting: far longer than one add
#: takes, retries included, and short enough that a vanished claimant does not block
#: the device for long.
LEASE: Final = timedelta(minutes=10)
_ADDING, _ADDED = "adding", "added"
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
        self, table: TableClient, *, standing: timedelta, sleep: Sleep | None = None
    ) -> None:
        self._table = table
        self._standing = standing
        self._sleep = sleep
        self._ready = False

    def take(
        self, request: RemediationRequest, resource_id: int, now: datetime, *, dry_run: bool
    ) -> Claim:
        """Claim the pair for ``request``; ``busy`` only after waiting a few seconds for
        the request that holds it."""
        owner = claim_owner(request)
        keys = _keys(request.collection_id, resource_id, dry_run)

        last: list[Claim] = []

        def attempt() -> Claim:
            claim = self._conflict_free(lambda: self._take_once(keys, owner, now), request)
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

    def settle(
        self, request: RemediationRequest, resource_id: int, now: datetime, *, dry_run: bool
    ) -> None:
        """The device is a member now: the claim stands as ``added``."""
        partition, row = _keys(request.collection_id, resource_id, dry_run)
        entity = {
            "PartitionKey": partition,
            "RowKey": row,
            "State": _ADDED,
            "Owner": claim_owner(request),
            "Since": now,
        }
        self._ensure_table()
        with storage_errors("write the membership claims table", "table"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def release(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """Drop this request's ``adding`` claim (nothing was added)."""
        self._change_own(
            request,
            resource_id,
            dry_run,
            lambda keys, etag: self._table.delete_entity(
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
            lambda keys, etag: self._table.update_entity(
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
        found = self._get(*keys)
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
        self._ensure_table()
        with storage_errors("write the membership claims table", "table"):
            self._table.delete_entity(*_keys(request.collection_id, resource_id, dry_run))

    # -- storage -------------------------------------------------------------------

    def _ensure_table(self) -> None:
        if not self._ready:
            ensure_table(self._table, "membership claims")
            self._ready = True

    def _get(self, partition: str, row: str) -> Any:
        self._ensure_table()
        with storage_errors("read the membership claims table", "table"):
            try:
                return self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                return None

    def _take_once(self, keys: tuple[str, str], owner: str, now: datetime) -> Claim:
        """One read and at most one conditional write; raises a conflict to retry."""
        found = self._get(*keys)
        fresh: dict[str, Any] = {
            "PartitionKey": keys[0],
            "RowKey": keys[1],
            "State": _ADDING,
            "Owner": owner,
            "Since": now,
        }
        with storage_errors("write the membership claims table", "table", let_through=CONFLICTS):
            if found is None:
                self._table.create_entity(fresh)
                return Claim("taken", owner, now)
            holder, since = str(found["Owner"]), found["Since"]
            if found["State"] == _ADDED and now - since < self._standing:
                return Claim("added", holder, since)
            resumed = found["State"] == _ADDING and holder == owner
            fresh_lease = now - since < LEASE and not found.get("Abandoned")
            if found["State"] == _ADDING and not resumed and fresh_lease:
                return Claim("busy", holder, since)
            # Its own earlier attempt's claim, an added claim that has run its time (the
            # site has evaluated since), or an adding one whose claimant failed or
            # vanished: (re)take it, conditionally, so that of two takers one wins.
            self._table.update_entity(
                fresh,
                mode=UpdateMode.REPLACE,
                etag=found.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            recovering = found["State"] == _ADDING
            return Claim("taken", owner, now, recovering=recovering, resumed=resumed)

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
