"""Where the export progress lives: one JSON blob per site in the storage account, and a
blob lease per site.

Writes are conditional on the ETag; on a conflict the writer reloads, merges (every
field of a :class:`SiteWatermark` only grows) and writes again, so two overlapping runs
can neither move a watermark backwards nor lose a row. The lease keeps a second run
from doing the same work at the same time.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.errors import StorageError, WatermarkConflict
from shared.export.watermark import SiteWatermark
from shared.platform.retry import RetryPolicy, Sleep, any_of
from shared.platform.storage import create_missing, storage_errors

log = logging.getLogger(__name__)


def _conflict(error: HttpResponseError) -> bool:
    """Whether a conditional write was refused because another writer was first."""
    return isinstance(error, ResourceModifiedError | ResourceExistsError) or (
        error.status_code in (409, 412)
    )


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

    def __init__(
        self, container: ContainerClient, *, lease_seconds: int = 60, sleep: Sleep | None = None
    ) -> None:
        self._container = container
        self._lease_seconds = lease_seconds
        self._sleep = sleep
        self._ready = False

    def _ensure_container(self) -> None:
        if self._ready:
            return
        create_missing(
            self._container.create_container,
            f"blob container {self._container.container_name!r}",
            "blob",
        )
        self._ready = True

    @staticmethod
    def _state_blob(site_code: str) -> str:
        return f"export/{site_code}.json"

    def load(self, site_code: str) -> tuple[SiteWatermark | None, str | None]:
        """The saved state of a site and its ETag, or (None, None) if it has none."""
        self._ensure_container()
        blob = self._container.get_blob_client(self._state_blob(site_code))
        with storage_errors(f"read the export state of site {site_code}", "blob"):
            try:
                download = blob.download_blob()
                data = download.readall()
            except ResourceNotFoundError:
                return None, None
        state = SiteWatermark.model_validate_json(data)
        return state, str(download.properties.etag)

    def save(self, state: SiteWatermark, etag: str | None) -> str:
        """Write the state if nobody wrote it since ``etag`` (None: only if it is new);
        WatermarkConflict if somebody did."""
        self._ensure_container()
        blob = self._container.get_blob_client(self._state_blob(state.site_code))
        body = state.model_dump_json()
        with storage_errors(f"save the export state of site {state.site_code}", "blob"):
            try:
                if etag is None:
                    result = blob.upload_blob(body, overwrite=False)
                else:
                    result = blob.upload_blob(
                        body,
                        overwrite=True,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            except HttpResponseError as error:
                if not _conflict(error):
                    raise
                raise WatermarkConflict(
                    f"site={state.site_code}: export state changed meanwhile"
                ) from None
        return str(result["etag"])

    def save_merged(
        self, state: SiteWatermark, etag: str | None, overlap: timedelta, *, attempts: int = 10
    ) -> tuple[SiteWatermark, str]:
        """Save; on a conflict merge with what is stored and try again."""

        def attempt() -> tuple[SiteWatermark, str]:
            nonlocal state, etag
            try:
                return state, self.save(state, etag)
            except WatermarkConflict:
                stored, etag = self.load(state.site_code)
                if stored is not None:
                    state = state.merge(stored, overlap)
                raise

        try:
            return RetryPolicy.for_conflicts(attempts).call(
                attempt,
                transient=any_of(WatermarkConflict),
                what=f"site={state.site_code}: saving the export state",
                sleep=self._sleep,
            )
        except WatermarkConflict:
            raise StorageError(
                f"site={state.site_code}: export state kept changing during {attempts} attempts "
                "to save it; is another exporter running in a tight loop?"
            ) from None

    def lock(self, site_code: str) -> SiteLock | None:
        """Lease the site for this run, or None if another run holds it."""
        self._ensure_container()
        blob = self._container.get_blob_client(f"export/{site_code}.lock")
        with storage_errors(f"create the lock blob of site {site_code}", "blob"):
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            except HttpResponseError as error:
                if error.status_code != 412:  # a leased lock blob refuses the write: fine
                    raise
        lease = BlobLeaseClient(blob)
        with storage_errors(f"lease the lock blob of site {site_code}", "blob"):
            try:
                lease.acquire(lease_duration=self._lease_seconds)
            except HttpResponseError as error:
                if error.status_code == 409:
                    return None
                raise
        return SiteLock(lease, site_code)
