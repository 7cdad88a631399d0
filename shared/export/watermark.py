"""Export progress per site: what has been examined, and how far it is safe to skip.

Why not a plain ``RecordID > watermark``: nothing documents that site database rows
commit in RecordID order, so a row can become visible after a higher RecordID was
exported. Each site therefore keeps

* ``floor``: every row at or below it has been examined, or was allocated so long
  before a completed scan that it had committed by then;
* ``examined``: the RecordIDs above the floor that were already examined, so a re-read
  skips them (de-duplication on SiteCode + RecordID), as inclusive ``[first, last]``
  ranges: a site's RecordIDs are dense, so a run of thousands is one pair;
* ``scans``: recent completed runs (start, end, how far the scan reached), from which
  the floor advances once a scan started at least the overlap after another ended.

A row that commits within ``EXPORT_OVERLAP_MINUTES`` of getting its RecordID is
therefore exported exactly once, however the runs fall. docs/export.md has the proof.

Two versions of a site's state merge without moving anything back
(:meth:`SiteWatermark.merge`). This module is the state alone, without storage:
shared.export.watermark_store keeps it in the storage account.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Keep the history of scans bounded even if the floor cannot move for a long time.
MAX_SCANS: Final = 200
_INFINITY: Final = 2**63


class Scan(BaseModel):
    """One completed export run over a site."""

    model_config = ConfigDict(frozen=True)

    started_utc: datetime
    ended_utc: datetime
    #: The highest RecordID the run read contiguously from its floor.
    reached_record_id: int


class SiteWatermark(BaseModel):
    """What has been exported for one site."""

    #: 1: ``examined`` was a list of RecordIDs (read, and written back as 2).
    schema_version: Literal[1, 2] = 2
    site_code: str
    #: The EXPORT_START_TIME in force when the site was first seen; kept so that
    #: changing the setting later cannot rewind an existing export.
    start_time_utc: datetime | None = None
    floor_record_id: int = 0
    high_record_id: int = 0
    #: Sorted, disjoint, not adjacent inclusive ranges of RecordIDs.
    examined: list[tuple[int, int]] = Field(default_factory=list)
    scans: list[Scan] = Field(default_factory=list)
    updated_utc: datetime | None = None

    @field_validator("schema_version")
    @classmethod
    def _current(cls, _: int) -> Literal[2]:
        return 2  # whatever was read is held, and written back, as version 2

    @field_validator("examined", mode="before")
    @classmethod
    def _ranges(cls, value: object) -> object:
        # Version 1 kept every RecordID: the same set, as ranges.
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return _union([], [(r, r) for r in sorted(set(value))])
        return value

    def is_examined(self, record_id: int) -> bool:
        """True if this RecordID needs no second look."""
        if record_id <= self.floor_record_id:
            return True
        index = bisect.bisect_right(self.examined, (record_id, _INFINITY)) - 1
        return index >= 0 and self.examined[index][0] <= record_id <= self.examined[index][1]

    def mark_examined(self, record_ids: Iterable[int]) -> None:
        """Record that these rows were examined (and enqueued where they matched)."""
        new = sorted({r for r in record_ids if r > self.floor_record_id})
        self.examined = _union(self.examined, _runs(new))
        if self.examined:
            self.high_record_id = max(self.high_record_id, self.examined[-1][1])

    def examined_count(self) -> int:
        """How many RecordIDs above the floor were examined."""
        return sum(last - first + 1 for first, last in self.examined)

    def complete_scan(self, scan: Scan, overlap: timedelta) -> None:
        """Record a finished run and advance the floor as far as is safe."""
        self.scans = sorted({*self.scans, scan}, key=lambda s: (s.ended_utc, s.reached_record_id))
        self.compact(overlap)

    def compact(self, overlap: timedelta) -> None:
        """Raise the floor to the highest RecordID that no late commit can still reach.

        A row at or below scan k's reach was allocated before k ended, so it had
        committed by ``k.ended + overlap``. A scan j that started after that and read
        at least as far as the row has examined it. The floor is the best such row.
        """
        floor = self.floor_record_id
        for later in self.scans:
            for earlier in self.scans:
                if earlier.ended_utc + overlap <= later.started_utc:
                    floor = max(floor, min(earlier.reached_record_id, later.reached_record_id))
        self.floor_record_id = floor
        self.high_record_id = max(self.high_record_id, floor)
        self.examined = [
            (max(first, floor + 1), last) for first, last in self.examined if last > floor
        ]
        # A scan whose reach is at or below the floor can no longer raise it.
        keep = [s for s in self.scans if s.reached_record_id > floor]
        if not keep and self.scans:
            keep = [self.scans[-1]]
        self.scans = keep[-MAX_SCANS:]

    def merge(self, other: SiteWatermark, overlap: timedelta) -> SiteWatermark:
        """The union of two versions of the same site's state; nothing moves back."""
        merged = self.model_copy(deep=True)
        merged.start_time_utc = self.start_time_utc or other.start_time_utc
        merged.floor_record_id = max(self.floor_record_id, other.floor_record_id)
        merged.high_record_id = max(self.high_record_id, other.high_record_id)
        merged.examined = _union(self.examined, other.examined)
        merged.scans = sorted(
            {*self.scans, *other.scans}, key=lambda s: (s.ended_utc, s.reached_record_id)
        )
        merged.compact(overlap)
        return merged


Ranges = list[tuple[int, int]]


def _runs(sorted_ids: list[int]) -> Ranges:
    """Consecutive sorted RecordIDs as inclusive ranges."""
    runs: Ranges = []
    for record_id in sorted_ids:
        if runs and record_id == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], record_id)
        else:
            runs.append((record_id, record_id))
    return runs


def _union(ours: Ranges, theirs: Ranges) -> Ranges:
    """Two range lists as one: sorted, overlapping and adjacent ranges joined."""
    joined: Ranges = []
    for first, last in sorted([*ours, *theirs]):
        if joined and first <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(joined[-1][1], last))
        else:
            joined.append((first, last))
    return joined
