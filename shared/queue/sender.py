"""The storage queue that carries remediation requests from the exporter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from azure.storage.queue import QueueClient

from shared.domain.requests import RemediationRequest
from shared.platform.storage import create_missing, storage_error, storage_errors

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
        create_missing(self._client.create_queue, f"queue {self.name!r}", "queue")
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
            raise storage_error(
                f"enqueue {len(failures)} of {len(requests)} messages on {self.name!r} (first: "
                f"site={request.site_code} record={request.record_id} "
                f"collection={request.collection_id})",
                error,
                "queue",
            )

    def send_later(self, request: RemediationRequest, delay_seconds: int) -> None:
        """Put the request back on the queue, invisible for ``delay_seconds``."""
        self.ensure_exists()
        with storage_errors(
            f"requeue site={request.site_code} record={request.record_id} "
            f"machine={request.machine_name!r} collection={request.collection_id} for a later try",
            "queue",
        ):
            self._client.send_message(
                request.to_json(), visibility_timeout=delay_seconds, time_to_live=NEVER_EXPIRE
            )

    def close(self) -> None:
        """Stop the sender threads and close the client."""
        self._pool.shutdown(wait=True)
        self._client.close()
