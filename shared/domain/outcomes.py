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
