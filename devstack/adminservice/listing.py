"""What a GET of an entity set asks for, read once from its query options (the filter,
the order, ``$skip``, ``$top`` and ``$select``), and how rows in memory answer it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from devstack.adminservice.entities import _DATE, _DEFAULT_PROPERTIES, _ENTITY_SETS, Entity
from devstack.adminservice.filter import Filter, parse_filter
from devstack.adminservice.odata import OrderBy, _count, _orderby, _select


@dataclass(frozen=True, slots=True)
class Listing:
    """One entity-set GET: ``order`` is (property, descending) pairs; ties keep key order."""

    entity_set: str
    filter: Filter | None
    order: OrderBy
    skip: int
    top: int | None
    select: list[str] | None

    @classmethod
    def from_options(cls, entity_set: str, options: Mapping[str, str]) -> Self:
        """Parse the query options (400 on any error)."""
        properties = _ENTITY_SETS[entity_set]
        text = options.get("$filter")
        return cls(
            entity_set=entity_set,
            filter=None if text is None else parse_filter(text, entity_set),
            order=_orderby(options.get("$orderby"), properties, entity_set),
            skip=_count("$skip", options["$skip"]) if "$skip" in options else 0,
            top=_count("$top", options["$top"]) if "$top" in options else None,
            select=_select(options.get("$select"), properties, entity_set),
        )

    def answer(self, rows: Sequence[Entity]) -> list[Entity]:
        """Filter, order and page ``rows`` (given in key order; never mutated)."""
        kept = [row for row in rows if self.filter is None or self.filter(row)]
        for name, descending in reversed(self.order):
            # Stable sorts, last key first: ties keep the order of the keys before them.
            kept.sort(key=self._sort_key(name), reverse=descending)
        return self.page(kept)

    def page(self, rows: list[Entity]) -> list[Entity]:
        """``$skip`` and ``$top`` applied to ordered rows."""
        end = None if self.top is None else self.skip + self.top
        return rows[self.skip : end]

    def project(self, rows: list[Entity]) -> list[Entity]:
        """The ``$select``ed properties of each row (new rows); without ``$select``, the
        set's default properties (``_DEFAULT_PROPERTIES``) or the rows themselves."""
        names = self.select
        if names is None:
            names = list(_DEFAULT_PROPERTIES.get(self.entity_set, ())) or None
        if names is None:
            return rows
        return [{name: row[name] for name in names} for row in rows]

    def _sort_key(self, name: str) -> Callable[[Entity], tuple[bool, Any]]:
        is_date = _ENTITY_SETS[self.entity_set][name] == _DATE

        def key(row: Entity) -> tuple[bool, Any]:
            value = row.get(name)
            if value is not None and is_date:
                value = datetime.fromisoformat(value)
            return (value is not None, value)  # null sorts first, as SQL Server sorts it

        return key
