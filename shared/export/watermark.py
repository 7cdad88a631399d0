"""Export progress per site, kept in the storage account with optimistic concurrency.

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

The state is a JSON blob per site. Writes are conditional on the ETag; on a conflict
the writer reloads, merges (every field only grows) and writes again, so two
overlapping runs can neither move a watermark backwards nor lose a row. A blob lease
per site keeps a second run from doing the same work at the same time.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobLeaseClient, ContainerClient
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import StorageError
from shared.platform.storage import create_missing

log = logging.getLogger(__name__)

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


class WatermarkConflict(StorageError):
    """Someone else wrote the state since it was read (the ETag no longer matches)."""


class SiteLock:
    """A blob lease that keeps two runs from exporting the same site at once."""

    def __init__(self, lease: BlobLeaseClient, site_code: str) -> None:
        self._lease = lease
        self.site_code = site_code

    def renew(self) -> bool:
        """Extend the lease; False if it was lost (another run may now hold it)."""
        try:
            self._lease.renew()
            return True
        except AzureError:
            return False

    def release(self) -> None:
        """Give the site back; a lost lease is not an error here."""
        try:
            self._lease.release()
        except AzureError:
            log.debug("site=%s: lease already gone at release", self.site_code)


class WatermarkStore:
    """Loads and saves :class:`SiteWatermark` blobs with ETag-conditional writes."""

    def __init__(self, container: ContainerClient, *, lease_seconds: int = 60) -> None:
        self._container = container
        self._lease_seconds = lease_seconds
        self._ready = False

    def _ensure_container(self) -> None:
        if self._ready:
            return
        create_missing(
            self._container.create_container,
            f"blob container {self._container.container_name!r}",
            "Storage Blob Data Owner",
        )
        self._ready = True

    @staticmethod
    def _state_blob(site_code: str) -> str:
        return f"export/{site_code}.json"

    def load(self, site_code: str) -> tuple[SiteWatermark | None, str | None]:
        """The saved state of a site and its ETag, or (None, None) if it has none."""
        self._ensure_container()
        blob = self._container.get_blob_client(self._state_blob(site_code))
        try:
            download = blob.download_blob()
            data = download.readall()
        except ResourceNotFoundError:
            return None, None
        except AzureError as error:
            raise StorageError(f"site={site_code}: cannot read export state: {error}") from None
        state = SiteWatermark.model_validate_json(data)
        return state, str(download.properties.etag)

    def save(self, state: SiteWatermark, etag: str | None) -> str:
        """Write the state if nobody wrote it since ``etag`` (None: only if it is new)."""
        self._ensure_container()
        blob = self._container.get_blob_client(self._state_blob(state.site_code))
        body = state.model_dump_json()
        try:
            if etag is None:
                result = blob.upload_blob(body, overwrite=False)
            else:
                result = blob.upload_blob(
                    body, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceModifiedError, ResourceExistsError):
            raise WatermarkConflict(
                f"site={state.site_code}: export state changed meanwhile"
            ) from None
        except HttpResponseError as error:
            if error.status_code in (409, 412):
                raise WatermarkConflict(
                    f"site={state.site_code}: export state changed meanwhile"
                ) from None
            raise StorageError(
                f"site={state.site_code}: cannot save export state: {error}"
            ) from None
        except AzureError as error:
            raise StorageError(
                f"site={state.site_code}: cannot save export state: {error}"
            ) from None
        return str(result["etag"])

    def save_merged(
        self, state: SiteWatermark, etag: str | None, overlap: timedelta, *, attempts: int = 10
    ) -> tuple[SiteWatermark, str]:
        """Save; on a conflict merge with what is stored and try again."""
        for _ in range(attempts):
            try:
                return state, self.save(state, etag)
            except WatermarkConflict:
                stored, etag = self.load(state.site_code)
                if stored is not None:
                    log.info(
                        "site=%s: export state was written by another run; merging",
                        state.site_code,
                    )
                    state = state.merge(stored, overlap)
        raise StorageError(
            f"site={state.site_code}: export state kept changing during {attempts} attempts to "
            "save it; is another exporter running in a tight loop?"
        )

    def lock(self, site_code: str) -> SiteLock | None:
        """Lease the site for this run, or None if another run holds it."""
        self._ensure_container()
        blob = self._container.get_blob_client(f"export/{site_code}.lock")
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            if error.status_code != 412:  # a leased lock blob refuses the write: fine
                raise StorageError(f"site={site_code}: cannot create lock blob: {error}") from None
        lease = BlobLeaseClient(blob)
        try:
            lease.acquire(lease_duration=self._lease_seconds)
        except HttpResponseError as error:
            if error.status_code == 409:
                return None
            raise StorageError(f"site={site_code}: cannot lease lock blob: {error}") from None
        return SiteLock(lease, site_code)
