"""The blast-radius guard: at most MAX_ADDS_PER_COLLECTION_PER_HOUR adds per collection
in any sliding 60-minute window, across every instance of the app.

Status messages are unauthenticated: anyone who can reach the management point can
send one. The guard bounds what a spoofed flood can push into a collection. Each
collection has one table row holding the adds of the last hour (a 6-byte key of the
request and the second it was let through), changed only with ETag-conditional
writes, so instances cannot both take the last slot.

A request keeps its slot when its add fails and is retried (the key is already in the
window), and gives it back when the add turned out not to be needed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.domain.requests import RemediationRequest
from shared.errors import StorageError
from shared.platform.retry import RetryPolicy
from shared.platform.storage import ensure_table

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
#: The most adds a window can hold: the row stays well under the 1 MiB entity limit.
MAX_LIMIT = 20_000

_ENTRY = struct.Struct(">6sq")  # request key, epoch second the add was let through
_CHUNK_BYTES = 60_000  # a binary property holds at most 64 KiB
_ROW = "window"
#: Conflicts only mean another instance wrote first: retry soon, many times.
_CONFLICTS = RetryPolicy(attempts=30, initial_backoff_seconds=0.02, max_backoff_seconds=0.5)


def add_limit_table_name(queue_name: str) -> str:
    """The guard's table beside a queue: table names allow letters and digits only."""
    return (re.sub(r"[^A-Za-z0-9]", "", queue_name) + "addlimit")[:63]


def _request_key(request: RemediationRequest) -> bytes:
    identity = f"{request.site_code}|{request.record_id}|{request.rule}"
    return hashlib.blake2b(identity.encode("utf-8"), digest_size=6).digest()


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether an add may go ahead now."""

    allowed: bool
    #: Adds let through for the collection in the last hour (this one included).
    adds_in_window: int
    #: When the oldest add in the window leaves it (a slot frees up).
    next_slot_utc: datetime | None
    #: True for the first request held since the guard last let an add through: the
    #: one that should raise the alarm (once, across instances).
    first_hold: bool = False


class AddLimiter:
    """Counts adds per collection in a sliding hour. Create once, reuse."""

    def __init__(
        self,
        table: TableClient,
        limit: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        self.limit = limit
        self._table = table
        self._ready = False
        self._sleep = sleep

    def reserve(self, request: RemediationRequest, now: datetime, *, dry_run: bool) -> Decision:
        """Take a slot for this request's add, or say it must be held."""
        key = _request_key(request)
        second = int(now.timestamp())

        def change(entries: dict[bytes, int], holding: bool) -> tuple[bool, bool, Decision]:
            if key in entries:  # a retry of an add that already has its slot
                return False, holding, self._decision(True, entries)
            if len(entries) >= self.limit:
                decision = self._decision(False, entries, first_hold=not holding)
                return not holding, True, decision
            entries[key] = second
            return True, False, self._decision(True, entries)

        return self._update(request.collection_id, dry_run, now, change)

    def give_back(self, request: RemediationRequest, now: datetime, *, dry_run: bool) -> None:
        """Return the slot of an add that was not needed (already a member, refused)."""
        key = _request_key(request)

        def change(entries: dict[bytes, int], holding: bool) -> tuple[bool, bool, Decision]:
            found = entries.pop(key, None) is not None
            return found, holding, self._decision(True, entries)

        self._update(request.collection_id, dry_run, now, change)

    def usage(self, collection_id: str, now: datetime, *, dry_run: bool = False) -> int:
        """Adds let through for the collection in the hour before ``now``."""
        entries, _, _ = self._load(self._partition(collection_id, dry_run), now)
        return len(entries)

    # -- storage -------------------------------------------------------------------

    def _decision(
        self, allowed: bool, entries: dict[bytes, int], *, first_hold: bool = False
    ) -> Decision:
        oldest = min(entries.values(), default=None)
        return Decision(
            allowed=allowed,
            adds_in_window=len(entries),
            next_slot_utc=(
                datetime.fromtimestamp(oldest, UTC) + WINDOW if oldest is not None else None
            ),
            first_hold=first_hold,
        )

    @staticmethod
    def _partition(collection_id: str, dry_run: bool) -> str:
        return f"{collection_id}-dry-run" if dry_run else collection_id

    def _ensure_table(self) -> None:
        if not self._ready:
            ensure_table(self._table, "add-limit")
            self._ready = True

    def _load(self, partition: str, now: datetime) -> tuple[dict[bytes, int], bool, Any]:
        """The window's entries (expired ones dropped), the holding flag, and the ETag."""
        self._ensure_table()
        try:
            entity = self._table.get_entity(partition, _ROW)
        except ResourceNotFoundError:
            return {}, False, None
        except AzureError as error:
            raise StorageError(f"cannot read the add-limit table: {error}") from None
        blob = b"".join(bytes(entity[f"Adds{i}"]) for i in range(int(entity.get("Chunks", 0))))
        oldest_kept = int((now - WINDOW).timestamp())
        entries = {key: second for key, second in _ENTRY.iter_unpack(blob) if second > oldest_kept}
        return entries, bool(entity.get("Holding", False)), entity.metadata.get("etag")

    def _update(
        self,
        collection_id: str,
        dry_run: bool,
        now: datetime,
        change: Callable[[dict[bytes, int], bool], tuple[bool, bool, Decision]],
    ) -> Decision:
        """Read, change and write back the collection's row; start over on a conflict."""
        partition = self._partition(collection_id, dry_run)
        for attempt in range(1, _CONFLICTS.attempts + 1):
            entries, holding, etag = self._load(partition, now)
            write, new_holding, decision = change(entries, holding)
            if not write:
                return decision
            blob = b"".join(_ENTRY.pack(k, s) for k, s in entries.items())
            chunks = [blob[i : i + _CHUNK_BYTES] for i in range(0, len(blob), _CHUNK_BYTES)]
            entity: dict[str, Any] = {
                "PartitionKey": partition,
                "RowKey": _ROW,
                "CollectionId": collection_id,
                "Chunks": len(chunks),
                "Holding": new_holding,
                **{f"Adds{i}": chunk for i, chunk in enumerate(chunks)},
            }
            try:
                if etag is None:
                    self._table.create_entity(entity)
                else:
                    self._table.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                return decision
            except (ResourceExistsError, ResourceModifiedError):
                # Another instance changed the window first: read it again.
                self._sleep(_CONFLICTS.backoff(attempt))
            except AzureError as error:
                raise StorageError(f"cannot write the add-limit table: {error}") from None
        raise StorageError(
            f"collection={collection_id}: the add-limit row kept changing under "
            f"{_CONFLICTS.attempts} attempts; the message will be retried"
        )
