"""The GET answers: an entity set with its query options, from the simulated site or,
for the status message classes and SMS_Site, from the site database; and one collection
or its settings by key, lazy properties included, in the shape chosen for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from devstack.adminservice.calls import _CallInfo
from devstack.adminservice.entities import (
    _DEFAULT_PROPERTIES,
    _ENTITY_SETS,
    _LAZY,
    _STATUS_MESSAGE_SETS,
    Entity,
)
from devstack.adminservice.filter import equality_scope, node_count
from devstack.adminservice.listing import Listing
from devstack.adminservice.odata import ODataError, _Answer, _json_answer, _select
from devstack.adminservice.site import Site
from devstack.adminservice.status_messages import StatusMessageReader, describe


class Queries:
    """Answers the entity-set and keyed GETs; without a status message reader, the
    status message classes and SMS_Site are empty."""

    def __init__(
        self,
        site: Site,
        status_messages: StatusMessageReader | None,
        *,
        key_get_shape: Literal["value", "entity"],
        missing_key: Literal["404", "empty"],
        max_filter_nodes: int | None = None,
    ) -> None:
        self._site = site
        self._status_messages = status_messages
        self.key_get_shape = key_get_shape
        self.missing_key = missing_key
        self.max_filter_nodes = max_filter_nodes

    def entity_set(
        self, entity_set: str, options: Mapping[str, str], context: str, info: _CallInfo
    ) -> _Answer:
        """``wmi/<entity set>`` with its query options (a status message query is
        described in ``info`` for the call log)."""
        listing = Listing.from_options(entity_set, options)
        limit = self.max_filter_nodes
        if limit is not None and listing.filter is not None and node_count(listing.filter) > limit:
            raise ODataError(400, f"The node count limit of '{limit}' has been exceeded.")
        reader = self._status_messages
        rows: list[Entity]
        if entity_set in _STATUS_MESSAGE_SETS:
            info.query = describe(listing, options)
            rows, read = reader.query(listing) if reader is not None else ([], 0)
            info.query = info.query._replace(rows_read=read)
        elif entity_set == "SMS_Site":
            rows = listing.answer(reader.sites() if reader is not None else [])
        elif entity_set == "SMS_FullCollectionMembership" and listing.filter is not None:
            # Build only the rows the filter can match (same answer, far cheaper).
            rows = listing.answer(
                self._site.memberships(
                    equality_scope(listing.filter, "CollectionID"),
                    equality_scope(listing.filter, "ResourceID"),
                )
            )
        else:
            rows = listing.answer(self._site.entities(entity_set))
        rows = listing.project(rows)
        if listing.select is not None:
            context += f"#{entity_set}({','.join(listing.select)})"
        else:
            context += f"#{entity_set}"
        return _json_answer(200, {"@odata.context": context, "value": rows})

    def by_key(
        self, entity_set: str, key: str, options: Mapping[str, str], context: str
    ) -> _Answer:
        """``wmi/<class>('<key>')``, lazy properties included (SMS_Collection's rules,
        SMS_CollectionSettings' windows, variables and power configurations)."""
        if options.keys() - {"$select"}:
            raise ODataError(400, "Only $select applies to a single entity.")
        lazy = _LAZY.get(entity_set, {})
        properties = {**_ENTITY_SETS[entity_set], **lazy}
        select = _select(options.get("$select"), properties, entity_set)
        if entity_set == "SMS_Collection":
            entity = self._site.collection_with_rules(key)
        else:
            entity = self._site.settings_with_windows(key)
        if entity is None:
            if self.missing_key == "empty":
                return _json_answer(200, {"@odata.context": f"{context}#{entity_set}", "value": []})
            raise ODataError(404, f"No {entity_set} instance with key '{key}' was found.")
        if select is None and entity_set in _DEFAULT_PROPERTIES:
            select = [*_DEFAULT_PROPERTIES[entity_set], *lazy]
        if select is not None:
            entity = {name: entity[name] for name in select}
        if self.key_get_shape == "entity":
            return _json_answer(
                200, {"@odata.context": f"{context}#{entity_set}/$entity", **entity}
            )
        return _json_answer(200, {"@odata.context": f"{context}#{entity_set}", "value": [entity]})
