"""Questions about one group, asked together (group commit).

While one query for a group is on its way, the questions about that group that arrive
meanwhile wait and then go out together as the next query (at most ``max_per_query``
items each). Nothing waits when nothing is on its way, so a lone question pays no delay;
under load, N questions about a group cost far fewer than N queries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

#: What is asked about (a ResourceID, a machine name); sortable, so queries are stable.
Item = TypeVar("Item", int, str)
#: What the answer says about one item.
Answer = TypeVar("Answer")


class _Batch(Generic[Item, Answer]):
    __slots__ = ("error", "found", "items", "state")

    def __init__(self) -> None:
        self.items: set[Item] = set()
        self.found: Mapping[Item, Answer] = {}
        self.error: BaseException | None = None
        self.state = "waiting"  # then "running", then "done"


class GroupCommit(Generic[Item, Answer]):
    """Asks ``lookup(group, items)`` about many items of a group at once; an item the
    answer leaves out is None. Thread-safe; create once, reuse."""

    def __init__(
        self, lookup: Callable[[str, Sequence[Item]], Mapping[Item, Answer]], *, max_per_query: int
    ) -> None:
        self._lookup: Callable[[str, Sequence[Item]], Mapping[Item, Answer]] = lookup
        self._max_per_query = max_per_query
        self._changed = threading.Condition()
        self._running: set[str] = set()
        self._waiting: dict[str, _Batch[Item, Answer]] = {}

    def ask(self, group: str, item: Item) -> Answer | None:
        """The answer about ``item`` (None: the lookup found nothing for it)."""
        with self._changed:
            batch = self._waiting.get(group)
            if batch is None:
                batch = self._waiting[group] = _Batch()
            batch.items.add(item)
            while batch.state == "waiting" and group in self._running:
                self._changed.wait()
            leads = batch.state == "waiting"
            if leads:
                # No query for the group is on its way: this one sends the batch.
                del self._waiting[group]
                self._running.add(group)
                batch.state = "running"
            else:
                while batch.state != "done":
                    self._changed.wait()
        if leads:
            self._send(group, batch)
        if batch.error is not None:
            raise batch.error
        return batch.found.get(item)

    def _send(self, group: str, batch: _Batch[Item, Answer]) -> None:
        found: dict[Item, Answer] = {}
        try:
            ordered = sorted(batch.items)
            for start in range(0, len(ordered), self._max_per_query):
                found.update(self._lookup(group, ordered[start : start + self._max_per_query]))
        except BaseException as error:
            batch.error = error
            raise
        finally:
            with self._changed:
                batch.found = found
                batch.state = "done"
                self._running.discard(group)
                self._changed.notify_all()
