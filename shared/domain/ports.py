"""The ports: what the pipeline stages need from the world, as Protocols.

Adapters (the site database, Azure Storage, the AdminService, the web services) live in
their stages and satisfy these structurally; ``shared.app.runtime`` plugs them in, and
tests pass fakes that type-check. A port whose values belong to one stage (the export
state, the guard's decision) is generic in them, so the stage keeps its own types.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from shared.domain.devices import DeviceRecord
from shared.domain.membership import ChangeResult, Claim, Membership, MembershipChange
from shared.domain.outcomes import Outcome, OutcomeKind
from shared.domain.requests import RemediationRequest
from shared.domain.status_messages import SiteSummary, StatusMessage

State = TypeVar("State")
Verdict = TypeVar("Verdict", covariant=True)


# -- export --------------------------------------------------------------------------


class StatusMessageSource(Protocol):
    """Where status messages come from (the site database, or the AdminService)."""

    def sites(self) -> Sequence[SiteSummary]:
        """Every site that has generic status messages, with its newest one."""
        ...

    def iter_pages(
        self,
        site_code: str,
        *,
        after_record_id: int,
        page_size: int,
        since: datetime | None = None,
    ) -> Iterator[list[StatusMessage]]:
        """The site's messages above ``after_record_id`` (and from ``since``), in
        RecordID order, ``page_size`` at a time."""
        ...

    def ping(self) -> None:
        """One small read that proves the source answers and may be read."""
        ...


class SiteLease(Protocol):
    """Holds one site for one export run."""

    def renew(self) -> bool:
        """Extend the lease; False when it was lost."""
        ...

    def release(self) -> None:
        """Give the site back."""
        ...


class ProgressStore(Protocol[State]):
    """Where export progress per site is kept (``State``: the exporter's watermark)."""

    def lock(self, site_code: str) -> SiteLease | None:
        """Lease the site for this run, or None if another run holds it."""
        ...

    def load(self, site_code: str) -> tuple[State | None, str | None]:
        """The saved state and its ETag, or (None, None)."""
        ...

    def save_merged(self, state: State, etag: str | None, overlap: timedelta) -> tuple[State, str]:
        """Save; when someone else wrote meanwhile, merge and save again."""
        ...


class RequestSender(Protocol):
    """Where remediation requests go (the remediation queue)."""

    def send(self, requests: Sequence[RemediationRequest]) -> None:
        """Send every request now."""
        ...

    def send_later(self, request: RemediationRequest, delay_seconds: int) -> None:
        """Send the request to be delivered after ``delay_seconds``."""
        ...


# -- remediation ---------------------------------------------------------------------


class DeviceSource(Protocol):
    """Where discovery records come from (the site database or the AdminService)."""

    def find_devices(self, netbios_name: str) -> list[DeviceRecord]:
        """Every record whose NetBIOS name equals ``netbios_name`` (case-insensitive)."""
        ...


class MembershipTarget(Protocol):
    """Where membership changes go (the AdminService, or the customer's web service)."""

    def apply(self, change: MembershipChange, *, dry_run: bool) -> tuple[ChangeResult, str]:
        """Add or remove the device's direct rule, idempotently; say what happened."""
        ...

    def run_deferred(self) -> None:
        """Do the deferred work that is due (collection refreshes); called between
        messages, not at the end of a batch."""
        ...


class OutcomeStore(Protocol):
    """Where outcomes are recorded: one per (status message, rule), the first stands."""

    def find(self, request: RemediationRequest, *, dry_run: bool = False) -> Outcome | None:
        """The outcome already recorded for this request, if any."""
        ...

    def kind_of(
        self, site_code: str, record_id: int, rule: str, *, dry_run: bool, decision: int = 1
    ) -> OutcomeKind | None:
        """The kind of outcome recorded for one decision about one (status message,
        rule), if any."""
        ...

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
        ...

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
        """Replace a held outcome with the final one; return whichever outcome stands."""
        ...

    def record_unparsed(self, body: bytes, message_id: str | None, reason: str) -> Outcome:
        """Record a message that could not be decoded (``rejected-input``)."""
        ...

    def held(self) -> list[tuple[Outcome, RemediationRequest]]:
        """Every held request, oldest first, with its outcome."""
        ...

    def mark_released(self, outcome: Outcome, released_by: str) -> bool:
        """Mark a held outcome released; False when it is no longer held."""
        ...


class Guard(Protocol[Verdict]):
    """The blast-radius guard: a bounded number of adds per collection and hour
    (``Verdict``: its decision on one add)."""

    @property
    def limit(self) -> int:
        """The adds a collection may take in any hour."""
        ...

    def reserve(
        self,
        request: RemediationRequest,
        now: datetime,
        *,
        dry_run: bool,
        limit: int | None = None,
    ) -> Verdict:
        """Take a slot for this request's add, or decide that it is held (``limit``: the
        rule's own, instead of the guard's)."""
        ...

    def give_back(self, request: RemediationRequest, now: datetime, *, dry_run: bool) -> None:
        """Return the slot of an add that did not happen."""
        ...

    def flush(self, now: datetime) -> None:
        """Return the slots this instance took ahead and did not use in time."""
        ...


class MembershipClaims(Protocol):
    """Exactly one add per (collection, device) across threads and instances: a claim
    taken before the add, settled by the outcome the request then records."""

    def take(
        self, request: RemediationRequest, resource_id: int, now: datetime, *, dry_run: bool
    ) -> Claim:
        """Claim the device's membership in the request's collection for this request,
        or say who holds it."""
        ...

    def release(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """Drop this request's claim: nothing was added (held, refused)."""
        ...

    def abandon(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """This request failed midway: its claim may be taken over (as recovering) now."""
        ...

    def forget(self, request: RemediationRequest, resource_id: int, *, dry_run: bool) -> None:
        """Drop whatever claim there is: the device's direct rule was removed."""
        ...


class MembershipSource(Protocol):
    """The evaluated membership of one device in one collection, read without the
    collection's whole rule list (so its cost does not grow with the collection)."""

    def membership(self, collection_id: str, resource_id: int) -> Membership:
        """``direct`` (a direct rule), ``other`` (member by another rule) or None."""
        ...


# -- queue ---------------------------------------------------------------------------


class MessageHandler(Protocol):
    """What a queue host hands each delivery to (the remediator)."""

    def handle(self, body: bytes | str, *, message_id: str | None = None) -> Outcome | None:
        """The delivery's outcome (None: requeued for later); raises to be retried."""
        ...

    def run_deferred(self) -> None:
        """Do the deferred work that is due; a host calls it between messages."""
        ...
