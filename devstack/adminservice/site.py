"""The simulated site's records: SMS_R_System devices, and device collections with their
direct rules and evaluated membership; the evaluated membership mirrored, when asked,
into the site database stand-in's ``v_FullCollectionMembership``."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import pyodbc

from devstack.adminservice.entities import (
    _DIRECT_RULE_TYPE,
    ALL_SYSTEMS,
    ALL_SYSTEMS_NAME,
    Entity,
    _Collection,
    _collection_entity,
    _system_entity,
)
from devstack.adminservice.odata import ODataError
from devstack.adminservice.targeting import (
    deployment_entity,
    deployment_id,
    service_window_entity,
    settings_entity,
)
from devstack.datagen import GeneratedDevice

log = logging.getLogger(__name__)


class MembershipMirror(Protocol):
    """Where evaluated membership is written as well (``SiteDatabase`` is one)."""

    def set_collection_members(
        self,
        collection_id: str,
        members: Mapping[int, bool],
        *,
        names: Mapping[int, str | None] | None = None,
    ) -> None: ...

    def apply_membership_change(
        self,
        collection_id: str,
        resource_id: int,
        is_direct: bool | None,
        *,
        name: str | None = None,
    ) -> None: ...


class Site:
    """Devices and collections (IDs are case-insensitive, like WMI keys); thread-safe, and
    changed while the simulator serves.

    A collection limited to another one (``set_limiting_collection``) has as members
    only the resources of its rules that are members of the limiting collection, as
    evaluated then (All Systems, the default, limits nothing). Deployments and
    maintenance windows are data only: they change no membership.

    A collection's rules may hold the same ResourceID more than once (a duplicate add
    that was kept). Its evaluated membership changes at evaluation only; each change
    is written to ``mirror`` first (a whole collection, or one row for one add or
    delete), under the lock, so the mirror always shows the latest evaluation. A
    failing mirror write is a 500 and changes nothing.
    """

    def __init__(
        self,
        devices: Iterable[GeneratedDevice],
        collections: Mapping[str, str],
        *,
        mirror: MembershipMirror | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._mirror = mirror
        self._devices: dict[int, GeneratedDevice] = {}
        self._system_rows: list[Entity] | None = None  # built on demand, dropped on change
        self._collections: dict[str, _Collection] = {}
        self._deployments: dict[str, Entity] = {}  # SMS_DeploymentSummary by DeploymentID
        self._serial = 0  # for the IDs of deployments and maintenance windows
        for device in devices:
            self._devices[device.resource_id] = device
        for collection_id, name in collections.items():
            self.add_collection(collection_id, name)

    # -- the scenario a test sets up -----------------------------------------------------

    def add_device(self, device: GeneratedDevice) -> None:
        """Add (or replace) an SMS_R_System record."""
        with self._lock:
            self._devices[device.resource_id] = device
            self._system_rows = None

    def clear_devices(self) -> None:
        """Remove every SMS_R_System record."""
        with self._lock:
            self._devices.clear()
            self._system_rows = None

    def add_collection(self, collection_id: str, name: str) -> None:
        """Add an empty device collection unless it exists (its mirrored rows emptied)."""
        with self._lock:
            key = collection_id.upper()
            if key not in self._collections:
                collection = _Collection(key, name)
                self._publish(collection, {})  # no rows left from an earlier scenario
                self._collections[key] = collection

    def set_direct_members(self, collection_id: str, resource_ids: Iterable[int]) -> None:
        """Replace the collection's direct rules (one per ResourceID); membership follows
        at once."""
        with self._lock:
            collection = self._collection(collection_id)
            ids = list(dict.fromkeys(resource_ids))
            members = {rid: True for rid in ids if self._within_limit(collection, rid)}
            self._publish(collection, members)
            collection.rules = [(rid, self._rule_name(rid)) for rid in ids]
            collection.counts = Counter(ids)
            collection.members = members
            collection.stale = False

    def set_limiting_collection(self, collection_id: str, limit_to: str) -> None:
        """Limit the collection to ``limit_to`` (a simulated collection, or All Systems)
        and evaluate its membership again at once."""
        with self._lock:
            collection = self._collection(collection_id)
            key = limit_to.upper()
            if key != ALL_SYSTEMS and key not in self._collections:
                raise KeyError(f"no limiting collection {limit_to!r} in the simulator")
            if key == collection.collection_id:
                raise ValueError("a collection cannot limit itself")
            collection.limit_to = key
            self._evaluate_all(collection)

    def add_deployment(
        self, collection_id: str, name: str, *, feature_type: int, intent: int, program: str
    ) -> str:
        """Deploy ``name`` to the collection: an SMS_DeploymentSummary row; its
        DeploymentID."""
        with self._lock:
            collection = self._collection(collection_id)
            self._serial += 1
            key = collection.collection_id
            deployment = deployment_id(key, feature_type, self._serial)
            self._deployments[deployment] = deployment_entity(
                deployment=deployment,
                collection_id=key,
                collection_name=collection.name,
                name=name,
                feature_type=feature_type,
                intent=intent,
                program=program,
                serial=self._serial,
            )
            return deployment

    def add_collection_settings(self, collection_id: str) -> None:
        """Give the collection an SMS_CollectionSettings instance (without windows)."""
        with self._lock:
            self._collection(collection_id).settings = True

    def add_service_window(
        self,
        collection_id: str,
        name: str,
        *,
        description: str,
        enabled: bool,
        window_type: int,
        duration_minutes: int,
    ) -> str:
        """Add a maintenance window to the collection's settings (made if missing); its
        ServiceWindowID."""
        with self._lock:
            collection = self._collection(collection_id)
            self._serial += 1
            window_id = f"{{0A5E0000-0000-4000-8000-{self._serial:012X}}}"
            collection.settings = True
            window = service_window_entity(
                window_id=window_id,
                name=name,
                description=description,
                enabled=enabled,
                window_type=window_type,
                duration_minutes=duration_minutes,
            )
            collection.windows.append(window)
            return window_id

    def direct_members(self, collection_id: str) -> set[int]:
        """ResourceIDs with a direct rule in the collection."""
        with self._lock:
            return set(self._collection(collection_id).counts)

    def direct_rule_counts(self, collection_id: str) -> Counter[int]:
        """How many direct rules each ResourceID has in the collection (a copy)."""
        with self._lock:
            return Counter(self._collection(collection_id).counts)

    def members(self, collection_id: str) -> set[int]:
        """The evaluated membership."""
        with self._lock:
            return set(self._collection(collection_id).members)

    def _collection(self, collection_id: str) -> _Collection:
        try:
            return self._collections[collection_id.upper()]
        except KeyError:
            raise KeyError(f"no collection {collection_id!r} in the simulator") from None

    def _rule_name(self, resource_id: int) -> str:
        device = self._devices.get(resource_id)
        return device.name if device else str(resource_id)

    def _device_name(self, resource_id: int) -> str | None:
        device = self._devices.get(resource_id)
        return device.name if device else None

    # -- what queries read ---------------------------------------------------------------

    def entities(self, entity_set: str) -> list[Entity]:
        """Every entity of the set, in key order; never mutate them."""
        if entity_set == "SMS_FullCollectionMembership":
            return self.memberships()
        with self._lock:
            if entity_set == "SMS_R_System":
                if self._system_rows is None:
                    self._system_rows = [
                        _system_entity(self._devices[rid]) for rid in sorted(self._devices)
                    ]
                return self._system_rows  # never mutated: $select builds new rows
            if entity_set == "SMS_DeploymentSummary":
                return [self._deployments[key] for key in sorted(self._deployments)]
            collections = [c for _, c in sorted(self._collections.items())]
            if entity_set == "SMS_CollectionSettings":
                return [settings_entity(c.collection_id, None) for c in collections if c.settings]
            return [_collection_entity(c, self._limit_name(c)) for c in collections]

    def _limit_name(self, collection: _Collection) -> str:
        built_in = collection.collection_id.startswith("SMS")
        limit = collection.limit_to or ("" if built_in else ALL_SYSTEMS)
        limiting = self._collections.get(limit)
        if limiting is not None:
            return limiting.name
        return ALL_SYSTEMS_NAME if limit == ALL_SYSTEMS else ""

    def settings_with_windows(self, key: str) -> Entity | None:
        """The SMS_CollectionSettings with its lazy properties; None if there is none."""
        with self._lock:
            collection = self._collections.get(key.upper())
            if collection is None or not collection.settings:
                return None
            return settings_entity(collection.collection_id, collection.windows)

    def memberships(
        self,
        collection_ids: Iterable[str] | None = None,
        resource_ids: Iterable[int] | None = None,
    ) -> list[Entity]:
        """SMS_FullCollectionMembership rows in key order (collection, then ResourceID):
        all of them, or only those of the given collections (compared case-insensitively,
        as ``$filter`` compares strings) and ResourceIDs. Building only the rows a filter
        can match keeps a targeted query on a 20,000-member collection cheap."""
        wanted = None if collection_ids is None else {c.casefold() for c in collection_ids}
        resources = None if resource_ids is None else set(resource_ids)
        with self._lock:
            rows: list[Entity] = []
            for key, collection in sorted(self._collections.items()):
                if wanted is not None and key.casefold() not in wanted:
                    continue
                members = collection.members
                if resources is None:
                    rids = sorted(members)
                else:
                    rids = sorted(rid for rid in resources if rid in members)
                for rid in rids:
                    rows.append({
                        "CollectionID": key,
                        "ResourceID": rid,
                        "Name": self._device_name(rid),
                        "IsDirect": members[rid],
                    })  # fmt: skip
            return rows

    def collection_with_rules(self, key: str) -> Entity | None:
        """The SMS_Collection entity with its ``CollectionRules``; None if unknown."""
        with self._lock:
            collection = self._collections.get(key.upper())
            if collection is None:
                return None
            entity = _collection_entity(collection, self._limit_name(collection))
            entity["CollectionRules"] = [
                {
                    "@odata.type": _DIRECT_RULE_TYPE,
                    "RuleName": rule_name,
                    "ResourceID": rid,
                    "ResourceClassName": "SMS_R_System",
                }
                for rid, rule_name in collection.rules
            ]
            return entity

    # -- what actions change -------------------------------------------------------------

    def has_collection(self, key: str) -> bool:
        """Whether the collection exists (``key`` in upper case)."""
        with self._lock:
            return key in self._collections

    def has_device(self, resource_id: int) -> bool:
        """Whether an SMS_R_System record has this ResourceID."""
        with self._lock:
            return resource_id in self._devices

    def refresh(self, key: str) -> None:
        """Evaluate the membership: the direct rules' resources (mirrored whole)."""
        with self._lock:
            self._evaluate_all(self._collections[key])

    def _within_limit(self, collection: _Collection, resource_id: int) -> bool:
        """Whether the limiting collection lets the resource be a member."""
        limit = collection.limit_to
        if limit is None or limit == ALL_SYSTEMS:
            return True
        limiting = self._collections.get(limit)
        return limiting is not None and resource_id in limiting.members

    def _evaluate_all(self, collection: _Collection) -> None:
        """Evaluate the whole membership: the direct rules' resources within the limit
        (mirrored whole)."""
        members = {rid: True for rid in collection.counts if self._within_limit(collection, rid)}
        self._publish(collection, members)
        collection.members = members
        collection.stale = False

    def add_rule(
        self,
        key: str,
        resource_id: int,
        rule_name: str,
        *,
        evaluate: bool,
        keep_duplicate: bool = False,
    ) -> bool:
        """Add a direct rule; False if one existed, and then nothing is added unless
        ``keep_duplicate`` (a second identical rule). ``evaluate``: the membership
        follows at once."""
        with self._lock:
            collection = self._collections[key]
            existed = resource_id in collection.counts
            adds = keep_duplicate or not existed
            if evaluate:
                self._evaluate_change(collection, resource_id, member=True)
            elif adds:
                collection.stale = True
            if adds:
                collection.rules.append((resource_id, rule_name))
                collection.counts[resource_id] += 1
            return not existed

    def delete_rule(self, key: str, resource_id: int, *, evaluate: bool) -> bool:
        """Delete every direct rule of the ResourceID; False if there was none.
        ``evaluate`` as for ``add_rule``."""
        with self._lock:
            collection = self._collections[key]
            deleted = resource_id in collection.counts
            if evaluate:
                self._evaluate_change(collection, resource_id, member=False)
            elif deleted:
                collection.stale = True
            if deleted:
                collection.rules = [rule for rule in collection.rules if rule[0] != resource_id]
                del collection.counts[resource_id]
            return deleted

    def _evaluate_change(self, collection: _Collection, resource_id: int, *, member: bool) -> None:
        """Evaluate the membership as it will be once the rules of ``resource_id`` have
        changed (it has a rule, or none): one row's delta, or everything if an earlier
        change was left unevaluated. Mirrored before anything changes here. A resource
        outside the limiting collection never becomes a member."""
        member = member and self._within_limit(collection, resource_id)
        if collection.stale:
            members = {
                rid: True
                for rid in collection.counts
                if rid != resource_id and self._within_limit(collection, rid)
            }
            if member:
                members[resource_id] = True
            self._publish(collection, members)
            collection.members = members
            collection.stale = False
        elif member and resource_id not in collection.members:
            self._publish_change(collection, resource_id, True)
            collection.members[resource_id] = True
        elif not member and resource_id in collection.members:
            self._publish_change(collection, resource_id, None)
            del collection.members[resource_id]

    # -- the mirror ----------------------------------------------------------------------

    def _publish(self, collection: _Collection, members: Mapping[int, bool]) -> None:
        mirror = self._mirror
        if mirror is not None:
            names = {rid: self._device_name(rid) for rid in members}
            self._write(
                lambda: mirror.set_collection_members(
                    collection.collection_id, members, names=names
                )
            )

    def _publish_change(
        self, collection: _Collection, resource_id: int, is_direct: bool | None
    ) -> None:
        mirror = self._mirror
        if mirror is not None:
            name = self._device_name(resource_id)
            self._write(
                lambda: mirror.apply_membership_change(
                    collection.collection_id, resource_id, is_direct, name=name
                )
            )

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except (pyodbc.Error, RuntimeError) as error:  # RuntimeError: database stopped
            log.warning("AdminService simulator: the membership write failed: %s", error)
            raise ODataError(
                500,
                "The SMS Provider could not update the site database: "
                "Generic failure (0x80041001).",
                code="InternalServerError",
            ) from error
