"""A decided membership change, as a target receives it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shared.domain.requests import RemediationRequest

ChangeResult = Literal["added", "already-member", "removed", "not-member"]


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
