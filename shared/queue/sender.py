"""The storage queue that carries remediation requests from the exporter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from shared.domain.requests import RemediationRequest
from shared.errors import StorageError
from shared.platform.storage import create_missing

log = logging.getLogger(__name__)

#: Messages never expire: a request waiting for a device to be discovered must not
#: vanish after the service's default seven days.
NEVER_EXPIRE = -1


class RemediationQueue:
    """Sends remediation requests, in parallel, base64-encoded. Create once, reuse."""

    def __init__(self, client: QueueClient, *, workers: int = 8) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enqueue")
        self._exists = False

    @property
    def name(self) -> str:
        """The queue's name."""
        return str(self._client.queue_name)

    def ensure_exists(self) -> None:
        """Create the queue if it is missing (once per instance)."""
        if self._exists:
            return
        create_missing(
            self._client.create_queue, f"queue {self.name!r}", "Storage Queue Data Contributor"
        )
        self._exists = True

    def _send_one(self, request: RemediationRequest) -> None:
        self._client.send_message(request.to_json(), time_to_live=NEVER_EXPIRE)

    def send(self, requests: Sequence[RemediationRequest]) -> None:
        """Put every request on the queue, or raise StorageError after the SDK's retries.

        Some may have been sent when it raises: the caller then must not checkpoint them,
        and re-sends them on its next run (at-least-once).
        """
        if not requests:
            return
        self.ensure_exists()
        failures: list[tuple[RemediationRequest, BaseException]] = []
        for request, future in [(r, self._pool.submit(self._send_one, r)) for r in requests]:
            error = future.exception()
            if error is not None:
                failures.append((request, error))
        if failures:
            request, error = failures[0]
            raise StorageError(
                f"could not enqueue {len(failures)} of {len(requests)} messages on "
                f"{self.name!r} (first: site={request.site_code} record={request.record_id} "
                f"collection={request.collection_id}: {type(error).__name__}: {error}); "
                "check AzureWebJobsStorage and that the storage account is reachable"
            )

    def send_later(self, request: RemediationRequest, delay_seconds: int) -> None:
        """Put the request back on the queue, invisible for ``delay_seconds``."""
        self.ensure_exists()
        try:
            self._client.send_message(
                request.to_json(), visibility_timeout=delay_seconds, time_to_live=NEVER_EXPIRE
            )
        except AzureError as error:
            raise StorageError(
                f"site={request.site_code} record={request.record_id} "
                f"machine={request.machine_name!r} collection={request.collection_id}: "
                f"could not requeue for a later try: {error}"
            ) from None

    def close(self) -> None:
        """Stop the sender threads and close the client."""
        self._pool.shutdown(wait=True)
        self._client.close()
