"""Export progress per site: what has been examined, and how far it is safe to skip.

Why not a plain ``RecordID > watermark``: nothing documents that site database rows
commit in RecordID order, so a row can become visible after a higher RecordID was
exported. Each site therefore keeps

* ``floor``: every row at or below it has been examined, or was allocated so long
  before a completed scan that it had committed by then;
* ``examined``: the RecordIDs above the floor that were already examined, so a re-read
  skips them (de-duplication on SiteCode + RecordID);
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

from pydantic import BaseModel, ConfigDict, Field

#: Keep the history of scans bounded even if the floor cannot move for a long time.
MAX_SCANS: Final = 200


class Scan(BaseModel):
    """One completed export run over a site."""

    model_config = ConfigDict(frozen=True)

    started_utc: datetime
    ended_utc: datetime
    #: The highest RecordID the run read contiguously from its floor.
    reached_record_id: int


class SiteWatermark(BaseModel):
    """What has been exported for one site."""

    schema_version: Literal[1] = 1
    site_code: str
    #: The EXPORT_START_TIME in force when the site was first seen; kept so that
    #: changing the setting later cannot rewind an existing export.
    start_time_utc: datetime | None = None
    floor_record_id: int = 0
    high_record_id: int = 0
    examined: list[int] = Field(default_factory=list)
    scans: list[Scan] = Field(default_factory=list)
    updated_utc: datetime | None = None

    def is_examined(self, record_id: int) -> bool:
        """True if this RecordID needs no second look."""
        if record_id <= self.floor_record_id:
            return True
        index = bisect.bisect_left(self.examined, record_id)
        return index < len(self.examined) and self.examined[index] == record_id

    def mark_examined(self, record_ids: Iterable[int]) -> None:
        """Record that these rows were examined (and enqueued where they matched)."""
        merged = set(self.examined)
        merged.update(r for r in record_ids if r > self.floor_record_id)
        self.examined = sorted(merged)
        if self.examined:
            self.high_record_id = max(self.high_record_id, self.examined[-1])

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
        self.examined = [r for r in self.examined if r > floor]
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
        merged.examined = sorted(set(self.examined) | set(other.examined))
        merged.scans = sorted(
            {*self.scans, *other.scans}, key=lambda s: (s.ended_utc, s.reached_record_id)
        )
        merged.compact(overlap)
        return merged
