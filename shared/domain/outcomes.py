"""Outcomes: what happened to one remediation request, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

OutcomeKind = Literal[
    "added",
    "already-member",
    "removed",
    "not-member",
    "ambiguous",
    "unknown-device",
    "rejected-input",
    "target-refused",
    "held-rate-limit",
    "discarded",
]
HELD: Final = "held-rate-limit"
#: Outcomes ``cmremediate retry`` may decide again: what decided them can change (a
#: duplicate record cleaned up, a device discovered, a refusal fixed).
RETRYABLE: Final[tuple[OutcomeKind, ...]] = ("ambiguous", "unknown-device", "target-refused")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one request, and why."""

    kind: OutcomeKind
    reason: str
    recorded_utc: datetime
    site_code: str | None = None
    record_id: int | None = None
    machine_name: str | None = None
    resource_id: int | None = None
    #: The ResourceID the status message itself carried (AdminService source).
    message_resource_id: int | None = None
    rule: str | None = None
    collection_id: str | None = None
    action: str | None = None
    dry_run: bool = False
    #: False when an earlier delivery had already recorded this outcome.
    new: bool = True
    #: A held request an operator released: the next delivery adds it.
    released: bool = False
    #: Who released or discarded a held request, and when it was held.
    decided_by: str | None = None
    held_utc: datetime | None = None
    #: Which decision about the (status message, rule) this is: 1, or n + 1 after a
    #: ``cmremediate retry`` of decision n.
    decision: int = 1
    #: The decision that took this one's place (``cmremediate retry``), who asked for
    #: it and when; this row stays as it was.
    retried_as: int | None = None
    retried_by: str | None = None
    retried_utc: datetime | None = None
