"""What ``check`` says about the collections AdminService rules change: warnings for
an operator, never a failure (a built-in collection is refused by the rules
themselves; a missing one fails its check).

For each rule's collection:

1. a **required** deployment of an application, a program or software updates, or a
   **task sequence** deployment of any purpose, aims at it: every device added gets
   it (a task sequence there suggests the collection is no plain remediation list);
2. it has **maintenance windows**: required deployments to its members wait for them;
3. (rules that add) it is **limited** to a collection other than All Systems
   (``SMS00001``): a device outside that collection is added as a direct rule but never
   becomes a member.

Read once per check run for all rules (:class:`TargetReview`): one ``SMS_Collection``
query for the collections and All Systems, one more for the limiting collections
other than All Systems, one ``SMS_DeploymentSummary`` query, each filtered by
``CollectionID eq 'A' or ...`` (per 16 IDs); then one key GET of
``SMS_CollectionSettings`` per collection whose ``ServiceWindowsCount`` is not 0
(``ServiceWindows`` is lazy: no query answers it). A clean collection costs no request
of its own.

From Microsoft's SMS Provider reference: ``SMS_Collection`` has
``LimitToCollectionID``, ``LimitToCollectionName``, ``MemberCount`` and
``ServiceWindowsCount`` ("count of maintenance windows"); ``SMS_CollectionSettings``
(key ``CollectionID``, one instance per collection that has settings) holds the
windows in ``ServiceWindows``, qualifier ``lazy``; ``SMS_ServiceWindow`` has ``Name``,
``Description``, ``IsEnabled`` and ``ServiceWindowType`` (1 general, 4 software
updates, 5 task sequences); ``SMS_DeploymentSummary`` (what the console's Deployments
node and ``Get-CMDeployment`` list) has ``CollectionID``, ``DeploymentID``,
``SoftwareName``, ``ProgramName`` and ``FeatureType`` (1 application, 2 program,
5 software update, 6 baseline, 7 task sequence, ...). ``SMS_DeploymentInfo`` has no
``FeatureType`` (its ``DeploymentType`` codes are undocumented), hence the summary.

Unverified, and read so that either answer is safe:

- ``DeploymentIntent``: community queries of ``v_DeploymentSummary`` read 1 Required,
  2 Available, 3 Simulate; Microsoft's page points to a class whose 1/2/3 mean
  Install/Uninstall/Preflight. Only 2 is taken as "available"; 1 and every other code
  (printed raw) count as required. A ``FeatureType`` outside the documented list
  counts as installing software (printed raw).
- Whether ``ServiceWindowsCount`` is filled in over the AdminService: a missing value
  reads the settings anyway; a count the settings do not back is reported as such.
- How the AdminService writes embedded ``SMS_ServiceWindow`` objects: only the
  documented property names are read, ``IsEnabled`` missing counts as enabled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.errors import CmRemediateError, TargetRefused
from shared.targets.adminservice import AdminServiceClient

#: All Systems: the collection that limits nothing.
ALL_SYSTEMS: Final = "SMS00001"
#: ``SMS_DeploymentSummary.FeatureType`` as documented.
FEATURE_TYPES: Final = {
    1: "application",
    2: "program",
    3: "mobile program",
    4: "script",
    5: "software update",
    6: "configuration baseline",
    7: "task sequence",
    8: "content distribution",
    9: "distribution point group",
    10: "distribution point health",
    11: "configuration policy",
    28: "abstract configuration item",
}
#: Feature types that install software on every member when required.
INSTALLING: Final = frozenset({1, 2, 5})
TASK_SEQUENCE: Final = 7
#: ``DeploymentIntent`` (community practice, see the module docstring).
REQUIRED: Final = 1
AVAILABLE: Final = 2
#: ``SMS_ServiceWindow.ServiceWindowType`` as documented.
WINDOW_TYPES: Final = {1: "general", 4: "software updates", 5: "task sequences"}

Entity = Mapping[str, Any]


def _code(value: object) -> int | None:
    """A WMI integer as the service sent it (a number, or digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def deployment_finding(row: Entity) -> str | None:
    """What a deployment to a remediation collection means for the devices added to it,
    or None when it means nothing to them (an available application, a baseline...)."""
    feature, intent = _code(row.get("FeatureType")), _code(row.get("DeploymentIntent"))
    kind = FEATURE_TYPES.get(feature or 0) or f"FeatureType {row.get('FeatureType')} (unknown)"
    if intent == REQUIRED:
        purpose = "required"
    elif intent == AVAILABLE:
        purpose = "available"
    else:
        purpose = f"DeploymentIntent {row.get('DeploymentIntent')} (unknown: as required)"
    if feature == TASK_SEQUENCE:
        why = "is this a plain remediation collection?"
    elif intent == AVAILABLE or (feature in FEATURE_TYPES and feature not in INSTALLING):
        return None
    else:
        why = "devices added get it"
    name = (
        _text(row.get("SoftwareName"))
        or _text(row.get("ApplicationName"))
        or _text(row.get("PackageID"))
        or _text(row.get("DeploymentID"))
    )
    program = _text(row.get("ProgramName"))
    shown = repr(name) + (f" ({program!r})" if program else "")
    return f"{purpose} {kind} deployment {shown}: {why}"


def window_findings(windows: Sequence[Entity], count: int | None) -> list[str]:
    """One line per enabled maintenance window (they hold back required deployments);
    ``count``: ``ServiceWindowsCount``, for windows the settings do not show."""
    enabled = [w for w in windows if w.get("IsEnabled") is not False]
    if not windows and count:
        return [
            f"ServiceWindowsCount is {count} but no window could be read: required "
            "deployments to its members may wait for maintenance windows"
        ]
    return [
        f"maintenance window {_text(w.get('Name'))!r} ({_window_type(w)}) delays required "
        "deployments to members"
        for w in enabled
    ]


def _window_type(window: Entity) -> str:
    code = window.get("ServiceWindowType")
    return WINDOW_TYPES.get(_code(code) or 0) or f"ServiceWindowType {code}"


def _members(entity: Entity | None) -> str:
    count = _code(entity.get("MemberCount")) if entity is not None else None
    return "?" if count is None else str(count)


def limit_finding(
    collection: Entity, limiting: Entity | None, all_systems: Entity | None
) -> str | None:
    """The limiting collection when it is not All Systems, or None."""
    limit = _text(collection.get("LimitToCollectionID")).upper()
    if not limit or limit == ALL_SYSTEMS:
        return None
    name = _text(collection.get("LimitToCollectionName")) or (
        _text(limiting.get("Name")) if limiting is not None else ""
    )
    return (
        f"limited to {limit} {name!r} ({_members(limiting)} members; All Systems: "
        f"{_members(all_systems)}): devices outside it get a rule but never become members"
    )


@dataclass(frozen=True)
class _Findings:
    """One collection: whether it exists, and what every rule on it / each adding rule
    should hear."""

    exists: bool
    every: tuple[str, ...] = ()
    adding: tuple[str, ...] = ()


class TargetReview:
    """The rules' collections read once for all their checks: the checks run side by
    side, the first to ask reads (``client()`` is called then), the others wait for its
    answer, an error included."""

    def __init__(
        self, client: Callable[[], AdminServiceClient], collection_ids: Sequence[str]
    ) -> None:
        self._client = client
        self._ids = sorted({c.upper() for c in collection_ids})
        self._lock = threading.Lock()
        self._done = False
        self._found: dict[str, _Findings] = {}
        self._error: BaseException | None = None

    def warnings(self, rule_name: str, collection_id: str, action: str) -> list[str]:
        """The warnings for one rule, each naming the rule and the collection; raises
        :class:`TargetRefused` when the collection does not exist."""
        found = self._review().get(collection_id.upper(), _Findings(exists=False))
        if not found.exists:
            raise TargetRefused(f"collection {collection_id} does not exist")
        notes = [*found.every, *(found.adding if action == "add" else ())]
        return [f"rule {rule_name!r} ({collection_id}): {note}" for note in notes]

    def _review(self) -> dict[str, _Findings]:
        with self._lock:
            if not self._done:
                try:
                    self._found = self._read(self._client())
                except BaseException as error:  # every waiting check reports it
                    self._error = error
                self._done = True
            if self._error is not None:
                raise self._error
            return self._found

    def _read(self, client: AdminServiceClient) -> dict[str, _Findings]:
        found = client.collections([*self._ids, ALL_SYSTEMS])
        present = [c for c in self._ids if c in found]
        every: dict[str, list[str]] = {c: [] for c in present}

        limits = sorted(
            {
                limit
                for c in present
                if (limit := _text(found[c].get("LimitToCollectionID")).upper())
                and limit != ALL_SYSTEMS
                and limit not in found
            }
        )
        limiting: dict[str, Any] = dict(found)
        limit_error = ""
        if limits:
            try:
                limiting.update(client.collections(limits))
            except CmRemediateError as error:
                limit_error = f"; its member count was not read: {_line(error)}"

        if present:
            try:
                rows = client.deployments(present)
            except CmRemediateError as error:
                rows = []
                for c in present:
                    every[c].append(f"deployments not checked: {_line(error)}")
            by_name = sorted(
                rows, key=lambda r: (_text(r.get("SoftwareName")), _text(r.get("DeploymentID")))
            )
            for row in by_name:
                target = _text(row.get("CollectionID")).upper()
                finding = deployment_finding(row)
                if finding is not None and target in every:
                    every[target].append(finding)

        for c in present:
            count = _code(found[c].get("ServiceWindowsCount"))
            if count == 0:
                continue
            try:
                windows = client.service_windows(c)
            except CmRemediateError as error:
                every[c].append(f"maintenance windows not checked: {_line(error)}")
                continue
            every[c] += window_findings(windows, count)

        result: dict[str, _Findings] = {}
        for c in present:
            limit = _text(found[c].get("LimitToCollectionID")).upper()
            finding = limit_finding(found[c], limiting.get(limit), found.get(ALL_SYSTEMS))
            adding = (
                () if finding is None else (finding + (limit_error if limit in limits else ""),)
            )
            result[c] = _Findings(exists=True, every=tuple(every[c]), adding=adding)
        return result


def _line(error: BaseException) -> str:
    """An error's first line, short."""
    return (str(error).splitlines() or [type(error).__name__])[0][:120]
