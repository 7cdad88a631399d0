"""The blast-radius guard: at most MAX_ADDS_PER_COLLECTION_PER_HOUR adds per collection
in any sliding 60-minute window, across every instance of the app.

Status messages are unauthenticated: anyone who can reach the management point can
send one. The guard bounds what a spoofed flood can push into a collection. Each
collection has one table row holding the adds of the last hour (a 6-byte key of the
request and the second it was let through), changed only with ETag-conditional
writes, so instances cannot both take the last slot.

A request keeps its slot when its add fails and is retried (the key is already in the
window), and gives it back when the add turned out not to be needed.

An instance does not rewrite the row for every add: while the window has room, one
write takes a block of up to :data:`BLOCK` slots, and the instance hands them to its
next adds from memory. Every slot is stamped :data:`BLOCK_SECONDS` in the future and
is used before that moment or given back, so each add lies inside the span the row
counts it for: the limit holds across instances exactly as with one write per add.
Near the limit a block is one slot, so slots held for a moment by another instance
never hold an add that would have fitted.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import TableClient, UpdateMode

from shared.domain.clock import Clock
from shared.domain.ports import Guard
from shared.domain.requests import RemediationRequest
from shared.errors import AddHeld
from shared.platform.retry import Sleep
from shared.platform.storage import (
    CONFLICTS,
    LazyTable,
    storage_errors,
    table_name_beside,
    without_conflicts,
)

WINDOW = timedelta(hours=1)
#: The most adds a window can hold: the row stays well under the 1 MiB entity limit.
MAX_LIMIT = 20_000

_ENTRY = struct.Struct(">6sq")  # request key, epoch second the add was let through
_CHUNK_BYTES = 60_000  # a binary property holds at most 64 KiB
_ROW = "window"
#: Slots one write takes for this instance's next adds, at most.
BLOCK = 8
#: A slot taken in a block is used within this many seconds or given back.
BLOCK_SECONDS = 30
#: With less room than this left in the window, a block is one slot.
_SINGLE_BELOW = BLOCK * 4
#: Conflicts only mean another instance wrote first: retry soon, many times.
_CONFLICT_ATTEMPTS = 30


def guard_table_name(queue_name: str) -> str:
    """The guard's table beside a queue: table names allow letters and digits only."""
    # "addlimit": the guard's first name, kept because deployed tables carry it.
    return table_name_beside(queue_name, "addlimit")


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
    #: The limit this add was held to (the rule's own, or the guard's).
    limit: int = 0


class GuardSlot:
    """The guard as a target meets it, right before a real add (a MembershipChange's
    ``before_add``): takes a slot or raises AddHeld, keeping the decision for the
    remediator; gives the slot back when the add then does not happen. Without a guard
    (none configured, or a released add) every add goes ahead."""

    def __init__(
        self,
        guard: Guard[Decision] | None,
        request: RemediationRequest,
        clock: Clock,
        *,
        dry_run: bool,
        limit: int | None = None,
    ) -> None:
        self._guard = guard
        self._request = request
        self._clock = clock
        self._dry_run = dry_run
        self._limit = limit
        self._reserved = False
        #: The guard's decision, once it was asked.
        self.decision: Decision | None = None

    def __call__(self) -> None:
        if self._guard is None:
            return
        self.decision = self._guard.reserve(
            self._request, self._clock(), dry_run=self._dry_run, limit=self._limit
        )
        if not self.decision.allowed:
            raise AddHeld()
        self._reserved = True

    def give_back(self) -> None:
        """The add did not happen: it does not count against the collection."""
        if self._reserved and self._guard is not None:
            self._guard.give_back(self._request, self._clock(), dry_run=self._dry_run)
            self._reserved = False


@dataclass
class _Pool:
    """Slots this instance took from one window (at one limit) and has not used up."""

    #: (slot key, the second it is stamped with) not handed out yet.
    free: list[tuple[bytes, int]] = field(default_factory=list)
    #: Request key → (slot key, stamp) it was handed.
    given: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    #: Slots whose stamp passed unused: to be taken out of the row.
    stale: list[bytes] = field(default_factory=list)
    adds_in_window: int = 0


class BlastRadiusGuard:
    """Counts adds per collection in a sliding hour, in a table row per collection.
    Create once, reuse."""

    def __init__(
        self,
        table: TableClient,
        limit: int,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        self.limit = limit
        self._rows = LazyTable(table, "blast-radius guard")
        self._sleep = sleep
        #: (partition, limit) → this instance's slots there.
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._local = threading.Lock()

    def reserve(
        self,
        request: RemediationRequest,
        now: datetime,
        *,
        dry_run: bool,
        limit: int | None = None,
    ) -> Decision:
        """Take a slot for this request's add, or say it must be held; ``limit`` is the
        rule's own limit for its collection's window, else the guard's."""
        key = _request_key(request)
        second = int(now.timestamp())
        bound = min(limit or self.limit, MAX_LIMIT)
        pool_key = (self._partition(request.collection_id, dry_run), bound)
        with self._local:
            pool = self._pools.setdefault(pool_key, _Pool())
            local = _hand_out(pool, key, second, bound)
            if local is not None:
                return local
            stale, pool.stale = pool.stale, []
        taken: list[tuple[bytes, int]] = []

        def change(entries: dict[bytes, int], holding: bool) -> tuple[bool, bool, Decision]:
            taken.clear()
            returned = any([entries.pop(k, None) is not None for k in stale])
            if key in entries:  # a retry of an add that already has its slot
                return returned, holding, self._decision(True, entries, bound)
            room = bound - len(entries)
            if room <= 0:
                decision = self._decision(False, entries, bound, first_hold=not holding)
                return returned or not holding, True, decision
            size = 1 if room < _SINGLE_BELOW else min(BLOCK, room)
            # Counted as if used at the latest moment they may be.
            until = second + BLOCK_SECONDS
            spares = [(secrets.token_bytes(6), until) for _ in range(size - 1)]
            taken.extend([(key, until), *spares])
            entries.update(taken)
            return True, False, self._decision(True, entries, bound)

        decision = self._update(request.collection_id, dry_run, now, change)
        if taken and decision.allowed:
            with self._local:
                pool.given[key] = taken[0]
                pool.free.extend(taken[1:])
                pool.adds_in_window = decision.adds_in_window
        return decision

    def give_back(self, request: RemediationRequest, now: datetime, *, dry_run: bool) -> None:
        """Return the slot of an add that was not needed (already a member, refused): to
        this instance's next add when it is still fresh, else to the row."""
        key = _request_key(request)
        partition = self._partition(request.collection_id, dry_run)
        slot = key
        with self._local:
            for (pool_partition, _), pool in self._pools.items():
                held = pool.given.pop(key, None) if pool_partition == partition else None
                if held is None:
                    continue
                if int(now.timestamp()) < held[1]:
                    pool.free.append(held)  # the next add takes it: no write
                    return
                slot = held[0]

        def change(entries: dict[bytes, int], holding: bool) -> tuple[bool, bool, Decision]:
            found = entries.pop(slot, None) is not None
            return found, holding, self._decision(True, entries, self.limit)

        self._update(request.collection_id, dry_run, now, change)

    def flush(self, now: datetime) -> None:
        """Take the slots whose stamp passed unused out of their rows, so they do not
        count against the collection for the rest of the hour (between messages)."""
        second = int(now.timestamp())
        due: list[tuple[str, list[bytes]]] = []
        with self._local:
            for (partition, _), pool in self._pools.items():
                _expire(pool, second)
                if pool.stale:
                    due.append((partition, pool.stale))
                    pool.stale = []
        for partition, stale in due:

            def change(
                entries: dict[bytes, int], holding: bool, stale: list[bytes] = stale
            ) -> tuple[bool, bool, Decision]:
                returned = any([entries.pop(k, None) is not None for k in stale])
                return returned, holding, self._decision(True, entries, self.limit)

            collection_id = partition.removesuffix("-dry-run")
            self._update(collection_id, partition != collection_id, now, change)

    def usage(self, collection_id: str, now: datetime, *, dry_run: bool = False) -> int:
        """Adds let through for the collection in the hour before ``now``."""
        entries, _, _ = self._load(self._partition(collection_id, dry_run), now)
        return len(entries)

    # -- storage -------------------------------------------------------------------

    def _decision(
        self, allowed: bool, entries: dict[bytes, int], limit: int, *, first_hold: bool = False
    ) -> Decision:
        oldest = min(entries.values(), default=None)
        return Decision(
            allowed=allowed,
            adds_in_window=len(entries),
            next_slot_utc=(
                datetime.fromtimestamp(oldest, UTC) + WINDOW if oldest is not None else None
            ),
            first_hold=first_hold,
            limit=limit,
        )

    @staticmethod
    def _partition(collection_id: str, dry_run: bool) -> str:
        return f"{collection_id}-dry-run" if dry_run else collection_id

    def _load(self, partition: str, now: datetime) -> tuple[dict[bytes, int], bool, Any]:
        """The window's entries (expired ones dropped), the holding flag, and the ETag."""
        entity = self._rows.get(partition, _ROW)
        if entity is None:
            return {}, False, None
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

        def attempt() -> Decision:
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
            # Another instance changed the window first: the retry reads it again.
            with storage_errors(
                "write the blast-radius guard table", "table", let_through=CONFLICTS
            ):
                if etag is None:
                    self._rows.client.create_entity(entity)
                else:
                    self._rows.client.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            return decision

        return without_conflicts(
            attempt,
            attempts=_CONFLICT_ATTEMPTS,
            what=f"collection={collection_id}: the guard row",
            sleep=self._sleep,
        )


def _expire(pool: _Pool, second: int) -> None:
    """Move the pool's slots whose stamp passed, unused, to its stale ones."""
    fresh = [(slot, until) for slot, until in pool.free if second < until]
    pool.stale += [slot for slot, until in pool.free if second >= until]
    pool.free = fresh


def _hand_out(pool: _Pool, key: bytes, second: int, bound: int) -> Decision | None:
    """A slot for ``key`` from the pool, without a write; None when it has none."""
    held = pool.given.get(key)
    if held is not None and second < held[1]:
        return Decision(True, pool.adds_in_window, None, limit=bound)  # a retry here
    _expire(pool, second)
    if not pool.free:
        return None
    pool.given[key] = pool.free.pop()
    return Decision(True, pool.adds_in_window, None, limit=bound)
