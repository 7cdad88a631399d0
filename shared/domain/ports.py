"""The ports: what the pipeline stages need from the world, as Protocols.

Adapters (the site database, the AdminService, the web services, Azure Storage) live in
their stages and satisfy these structurally; tests pass fakes that type-check.
"""

from __future__ import annotations

from typing import Protocol

from shared.domain.devices import DeviceRecord
from shared.domain.membership import ChangeResult, MembershipChange


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

    def flush(self) -> None:
        """End of a batch: anything deferred (collection refreshes) happens now."""
        ...
