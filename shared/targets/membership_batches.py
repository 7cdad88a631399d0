"""Membership questions about one collection, asked together.

While one targeted query for a collection is on its way, the questions about that
collection that arrive meanwhile wait and then go out as the next query, one
``ResourceID eq a or ResourceID eq b ...`` filter (at most :data:`MAX_PER_QUERY` devices
each). Nothing waits when nothing is on its way, so a lone message pays no delay; under
load, N messages for a collection cost far fewer than N queries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from shared.domain.membership import Membership

#: Devices named in one query. ASP.NET OData refuses a $filter of more than 100 nodes
#: unless the service raises MaxNodeCount (whether the AdminService does is unverified):
#: ``CollectionID eq 'X' and (ResourceID eq a or ...)`` stays within that for 16.
MAX_PER_QUERY: Final = 16

Lookup = Callable[[str, Sequence[int]], Mapping[int, Membership]]


class _Batch:
    __slots__ = ("error", "found", "resource_ids", "state")

    def __init__(self) -> None:
        self.resource_ids: set[int] = set()
        self.found: Mapping[int, Membership] = {}
        self.error: BaseException | None = None
        self.state = "waiting"  # then "running", then "done"


class MembershipBatches:
    """A :class:`~shared.domain.ports.MembershipSource` that asks ``lookup`` about many
    devices of a collection at once. Thread-safe; create once, reuse."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._changed = threading.Condition()
        self._running: set[str] = set()
        self._waiting: dict[str, _Batch] = {}

    def membership(self, collection_id: str, resource_id: int) -> Membership:
        """How the device is in the collection (None: not at all)."""
        key = collection_id.upper()
        with self._changed:
            batch = self._waiting.get(key)
            if batch is None:
                batch = self._waiting[key] = _Batch()
            batch.resource_ids.add(int(resource_id))
            while batch.state == "waiting" and key in self._running:
                self._changed.wait()
            leads = batch.state == "waiting"
            if leads:
                # No query for the collection is on its way: this one sends the batch.
                del self._waiting[key]
                self._running.add(key)
                batch.state = "running"
            else:
                while batch.state != "done":
                    self._changed.wait()
        if leads:
            self._send(key, batch)
        if batch.error is not None:
            raise batch.error
        return batch.found.get(int(resource_id))

    def _send(self, key: str, batch: _Batch) -> None:
        found: dict[int, Membership] = {}
        try:
            ordered = sorted(batch.resource_ids)
            for start in range(0, len(ordered), MAX_PER_QUERY):
                found.update(self._lookup(key, ordered[start : start + MAX_PER_QUERY]))
        except BaseException as error:
            batch.error = error
            raise
        finally:
            with self._changed:
                batch.found = found
                batch.state = "done"
                self._running.discard(key)
                self._changed.notify_all()
