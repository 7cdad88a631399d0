"""Collection membership changes: idempotent add and remove of direct rules.

A device already in the collection is a success (``already-member``), never a second
rule; removing a device that has no direct rule is ``not-member``. What one message
costs does not grow with the collection. Refreshing a collection is deferred: at most
once per collection per minute, never once per device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared.domain.membership import ChangeResult, MembershipChange
from shared.domain.ports import MembershipSource
from shared.errors import (
    AdminServiceRefused,
    AdminServiceUnavailable,
    CmRemediateError,
    ServiceRefused,
    TargetRefused,
)
from shared.targets.adminservice import AdminServiceClient

log = logging.getLogger(__name__)


class CollectionRefresher:
    """Requests a collection evaluation at most once per collection per window."""

    def __init__(
        self,
        refresh: Callable[[str], None],
        *,
        enabled: bool,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh = refresh
        self._enabled = enabled
        self._window = window_seconds
        self._clock = clock
        self._pending: set[str] = set()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def changed(self, collection_id: str) -> None:
        """Note that the collection's rules changed."""
        if self._enabled:
            with self._lock:
                self._pending.add(collection_id)

    def flush(self, *, force: bool = False) -> None:
        """Refresh pending collections whose last refresh is older than the window."""
        with self._lock:
            now = self._clock()
            due = [
                c
                for c in sorted(self._pending)
                if force or now - self._last.get(c, float("-inf")) >= self._window
            ]
            for collection_id in due:
                self._pending.discard(collection_id)
                self._last[collection_id] = now
        for collection_id in due:
            try:
                self._refresh(collection_id)
                log.info("collection=%s: evaluation requested", collection_id)
            except CmRemediateError as error:
                # The rules are in place; the site evaluates on its own schedule anyway.
                log.warning("collection=%s: refresh request failed: %s", collection_id, error)


def _has_direct_rule(rules: list[dict[str, object]], resource_id: int) -> bool:
    return any(
        str(rule.get("@odata.type", "")).endswith("SMS_CollectionRuleDirect")
        and rule.get("ResourceID") == resource_id
        for rule in rules
    )


class AdminServiceMembership:
    """Membership through the AdminService. Whether a device is in a collection comes
    from a :class:`MembershipSource` (one targeted read, whatever the collection's size);
    the collection's whole rule list is read only to recover: after a failed rule call,
    or when an earlier attempt may have added already (``MembershipChange.recovering``).
    That exactly one add is made across threads and instances is the remediator's claim
    on the pair, taken before the target is called."""

    def __init__(
        self,
        client: AdminServiceClient,
        refresher: CollectionRefresher,
        membership: MembershipSource,
    ) -> None:
        self._client = client
        self._refresher = refresher
        self._membership = membership

    def _rules(self, collection_id: str) -> list[dict[str, object]]:
        rules = self._client.collection_rules(collection_id)
        if rules is None:
            raise TargetRefused(
                f"collection {collection_id} does not exist: fix the rule's collection_id"
            )
        return rules

    def apply(self, change: MembershipChange, *, dry_run: bool) -> tuple[ChangeResult, str]:
        """Add or remove the device's direct rule (named after the machine)."""
        if change.request.action == "add":
            return self._add(change, dry_run)
        return self._remove(change, dry_run)

    def _failed(
        self, error: CmRemediateError, collection_id: str, resource_id: int, *, rule_wanted: bool
    ) -> None:
        """After a failed rule call: return when the direct rule is there (or gone) as
        wanted all the same (a timeout or a duplicate answer may hide a change that did
        land); raise otherwise, ``target-refused`` when retrying cannot help."""
        if isinstance(error, ServiceRefused) and error.status in (401, 403):
            raise error  # refused at the door: nothing changed, and a look would be too
        if _has_direct_rule(self._rules(collection_id), resource_id) == rule_wanted:
            return
        if isinstance(error, ServiceRefused) and error.status in (400, 404, 409):
            raise TargetRefused(str(error)) from None
        raise error

    def _add(self, change: MembershipChange, dry_run: bool) -> tuple[ChangeResult, str]:
        collection_id = change.request.collection_id
        resource_id = change.resource_id
        if change.recovering:
            # The evaluated membership lags a fresh rule: look at the rules themselves.
            if _has_direct_rule(self._rules(collection_id), resource_id):
                return "already-member", "the direct rule an earlier attempt added is there"
        else:
            found = self._membership.membership(collection_id, resource_id)
            if found == "direct":
                return "already-member", "the device already has a direct rule"
            if found == "other":
                return "already-member", "the device is a member through another rule"
        change.before_add()
        if dry_run:
            return "added", "dry run: would add a direct rule"
        answered = self._rule_call(self._client.add_direct_rule, change, rule_wanted=True)
        return "added", f"direct rule added{answered}"

    def _remove(self, change: MembershipChange, dry_run: bool) -> tuple[ChangeResult, str]:
        collection_id = change.request.collection_id
        resource_id = change.resource_id
        # A rule cm-remediate added not long ago may not show in the evaluated membership.
        direct = change.added_by_us or change.recovering
        if not direct and self._membership.membership(collection_id, resource_id) != "direct":
            return "not-member", "the device has no direct rule in the collection"
        if dry_run:
            return "removed", "dry run: would delete the direct rule"
        answered = self._rule_call(self._client.delete_direct_rule, change, rule_wanted=False)
        return "removed", f"direct rule deleted{answered}"

    def _rule_call(
        self,
        call: Callable[[str, int, str], None],
        change: MembershipChange,
        *,
        rule_wanted: bool,
    ) -> str:
        """Add or delete the direct rule; a failure that left the rule as wanted passes
        (``_failed``) and is returned as text for the reason, any other raises. A call
        the service answered well makes the collection due for a refresh."""
        collection_id, resource_id = change.request.collection_id, change.resource_id
        # Only the AdminService's own answers may hide a landed change: a token that
        # could not be had (TokenEndpointUnavailable) stopped the call unsent.
        try:
            call(collection_id, resource_id, change.request.machine_name)
        except (AdminServiceUnavailable, AdminServiceRefused) as error:
            self._failed(error, collection_id, resource_id, rule_wanted=rule_wanted)
            return f" (the service also answered: {error})"
        self._refresher.changed(collection_id)
        return ""

    def run_deferred(self) -> None:
        """Request the collection evaluations that are due."""
        self._refresher.flush()
