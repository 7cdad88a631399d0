"""A decided membership change, as a target receives it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.domain.requests import RemediationRequest

ChangeResult = Literal["added", "already-member", "removed", "not-member"]
#: How a device is in a collection: by a direct rule, by another rule, or not (None).
Membership = Literal["direct", "other"] | None


def _admit() -> None:
    """No guard: every add may go ahead."""


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """One decided change: the request, and the device it resolved to."""

    request: RemediationRequest
    resource_id: int
    #: How many discovery records carry the machine's name (duplicates included).
    named_records: int
    #: Called by the target right before it really adds (the checks that find the
    #: device already a member come first); raises when the add must not happen.
    before_add: Callable[[], None] = _admit
    #: An earlier attempt of this request (or a claimant that vanished) may have added
    #: the rule already: the target must look at the direct rules themselves, not at
    #: the evaluated membership, which lags.
    recovering: bool = False
    #: cm-remediate itself added the direct rule not long ago (its claim says so), so
    #: a remove finds one although the evaluated membership may not show it yet.
    added_by_us: bool = False


ClaimState = Literal["taken", "added", "busy"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What the claim on one (collection, device) says to one request.

    ``taken``: this request may change the membership (``recovering`` when an earlier
    attempt of it, or a claimant that vanished, may have added already); ``added``: a
    request added the device (``owner``, ``since``) and the claim still stands, so this
    one is ``already-member`` without a call; ``busy``: another request is adding it
    right now (try again shortly).
    """

    state: ClaimState
    owner: str
    since: datetime
    recovering: bool = False
    #: Recovering from an earlier attempt of this same request (not another's claim).
    resumed: bool = False


def claim_owner(request: RemediationRequest) -> str:
    """The identity of a request in a claim (site, record, rule, and the decision when
    it is a retry)."""
    owner = f"{request.site_code}-{request.record_id}-{request.rule}"
    return owner if request.decision == 1 else f"{owner}~{request.decision}"
