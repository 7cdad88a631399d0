"""The simulated site's records: SMS_R_System devices, and device collections with their
direct rules and evaluated membership."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from devstack.adminservice.entities import (
    _DIRECT_RULE_TYPE,
    Entity,
    _Collection,
    _collection_entity,
    _system_entity,
)
from devstack.datagen import GeneratedDevice


class Site:
    """Devices and collections (IDs are case-insensitive, like WMI keys); thread-safe, and
    changed while the simulator serves."""

    def __init__(self, devices: Iterable[GeneratedDevice], collections: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        self._devices: dict[int, GeneratedDevice] = {}
        self._system_rows: list[Entity] | None = None  # built on demand, dropped on change
        self._collections: dict[str, _Collection] = {}
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
        """Add an empty device collection unless it exists."""
        with self._lock:
            key = collection_id.upper()
            if key not in self._collections:
                self._collections[key] = _Collection(collection_id.upper(), name)

    def set_direct_members(self, collection_id: str, resource_ids: Iterable[int]) -> None:
        """Replace the collection's direct rules; membership follows at once."""
        with self._lock:
            collection = self._collection(collection_id)
            collection.rules = {
                rid: self._devices[rid].name if rid in self._devices else str(rid)
                for rid in resource_ids
            }
            collection.members = set(collection.rules)

    def direct_members(self, collection_id: str) -> set[int]:
        """ResourceIDs with a direct rule in the collection."""
        with self._lock:
            return set(self._collection(collection_id).rules)

    def members(self, collection_id: str) -> set[int]:
        """The evaluated membership."""
        with self._lock:
            return set(self._collection(collection_id).members)

    def _collection(self, collection_id: str) -> _Collection:
        try:
            return self._collections[collection_id.upper()]
        except KeyError:
            raise KeyError(f"no collection {collection_id!r} in the simulator") from None

    # -- what queries read ---------------------------------------------------------------

    def entities(self, entity_set: str) -> list[Entity]:
        """Every entity of the set, in key order; never mutate them."""
        with self._lock:
            if entity_set == "SMS_R_System":
                if self._system_rows is None:
                    self._system_rows = [
                        _system_entity(self._devices[rid]) for rid in sorted(self._devices)
                    ]
                return self._system_rows  # never mutated: $select builds new rows
            if entity_set == "SMS_Collection":
                return [_collection_entity(c) for _, c in sorted(self._collections.items())]
            rows: list[Entity] = []
            for key, collection in sorted(self._collections.items()):
                for rid in sorted(collection.members):
                    device = self._devices.get(rid)
                    rows.append({
                        "CollectionID": key,
                        "ResourceID": rid,
                        "Name": device.name if device else None,
                        "IsDirect": rid in collection.rules,
                    })  # fmt: skip
            return rows

    def collection_with_rules(self, key: str) -> Entity | None:
        """The SMS_Collection entity with its ``CollectionRules``; None if unknown."""
        with self._lock:
            collection = self._collections.get(key.upper())
            if collection is None:
                return None
            entity = _collection_entity(collection)
            entity["CollectionRules"] = [
                {
                    "@odata.type": _DIRECT_RULE_TYPE,
                    "RuleName": rule_name,
                    "ResourceID": rid,
                    "ResourceClassName": "SMS_R_System",
                }
                for rid, rule_name in collection.rules.items()
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
        """Evaluate the membership: the direct rules' resources."""
        with self._lock:
            collection = self._collections[key]
            collection.members = set(collection.rules)

    def add_rule(self, key: str, resource_id: int, rule_name: str, *, evaluate: bool) -> bool:
        """Add a direct rule; False if one existed (nothing changes). ``evaluate``: the
        membership follows at once."""
        with self._lock:
            collection = self._collections[key]
            added = resource_id not in collection.rules
            if added:
                collection.rules[resource_id] = rule_name
            if evaluate:
                collection.members = set(collection.rules)
            return added

    def delete_rule(self, key: str, resource_id: int, *, evaluate: bool) -> bool:
        """Delete a direct rule; False if there was none. ``evaluate`` as for ``add_rule``."""
        with self._lock:
            collection = self._collections[key]
            deleted = resource_id in collection.rules
            if deleted:
                del collection.rules[resource_id]
            if evaluate:
                collection.members = set(collection.rules)
            return deleted
