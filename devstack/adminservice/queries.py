"""The GET answers: an entity set with ``$filter``, ``$select`` and ``$top``, and one
collection by key in the shape chosen for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from devstack.adminservice.entities import _COLLECTION_PROPERTIES, _ENTITY_SETS
from devstack.adminservice.filter import parse_filter
from devstack.adminservice.odata import ODataError, _Answer, _json_answer, _select, _top
from devstack.adminservice.site import Site


class Queries:
    """Answers the entity-set and keyed GETs from the site's records."""

    def __init__(
        self,
        site: Site,
        *,
        key_get_shape: Literal["value", "entity"],
        missing_key: Literal["404", "empty"],
    ) -> None:
        self._site = site
        self.key_get_shape = key_get_shape
        self.missing_key = missing_key

    def entity_set(self, entity_set: str, options: Mapping[str, str], context: str) -> _Answer:
        """``wmi/<entity set>`` with its query options."""
        properties = _ENTITY_SETS[entity_set]
        select = _select(options.get("$select"), properties, entity_set)
        rows = self._site.entities(entity_set)
        if "$filter" in options:
            predicate = parse_filter(options["$filter"], entity_set)
            rows = [row for row in rows if predicate(row)]
        if "$top" in options:
            rows = rows[: _top(options["$top"])]
        if select is not None:
            rows = [{name: row[name] for name in select} for row in rows]
            context += f"#{entity_set}({','.join(select)})"
        else:
            context += f"#{entity_set}"
        return _json_answer(200, {"@odata.context": context, "value": rows})

    def collection(self, key: str, options: Mapping[str, str], context: str) -> _Answer:
        """``wmi/SMS_Collection('<key>')``, with its rules."""
        if options.keys() - {"$select"}:
            raise ODataError(400, "Only $select applies to a single entity.")
        properties = {**_COLLECTION_PROPERTIES, "CollectionRules": "Collection"}
        select = _select(options.get("$select"), properties, "SMS_Collection")
        entity = self._site.collection_with_rules(key)
        if entity is None:
            if self.missing_key == "empty":
                return _json_answer(
                    200, {"@odata.context": f"{context}#SMS_Collection", "value": []}
                )
            raise ODataError(404, f"No SMS_Collection instance with key '{key}' was found.")
        if select is not None:
            entity = {name: entity[name] for name in select}
        if self.key_get_shape == "entity":
            return _json_answer(
                200, {"@odata.context": f"{context}#SMS_Collection/$entity", **entity}
            )
        return _json_answer(200, {"@odata.context": f"{context}#SMS_Collection", "value": [entity]})
