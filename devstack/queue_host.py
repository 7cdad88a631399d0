"""The .NET host's queue trigger listener, on top of :class:`FunctionsHost`.

What the Azure Functions host does for a ``queueTrigger`` (Storage Queues extension,
host.json ``extensions.queues``), and what the function therefore lives with:

- the queue name and connection come from the binding, ``%SETTING%`` resolved from
  app settings, the connection from setting ``<connection>``;
- it fetches ``batchSize`` messages at a time and fetches again once no more than
  ``newBatchThreshold`` are still running, so up to ``batchSize + newBatchThreshold``
  invocations run at once, in the worker's thread pool;
- with ``messageEncoding: base64`` it decodes each message; one that does not decode is
  never given to the function: it goes to ``<queue>-poison`` at once;
- success deletes the message; a failure makes it visible again after
  ``visibilityTimeout``, and the failure that reaches ``maxDequeueCount`` moves it to
  ``<queue>-poison`` (the body as it was stored) and deletes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import ExponentialRetry, QueueClient, QueueMessage

from devstack.functions_host import (
    FunctionsHost,
    Invocation,
    QueueDelivery,
    resolve_setting_references,
)
from shared.platform.storage import approximate_depth
from shared.queue.encoding import from_queue_text
from shared.queue.options import QueueOptions

log = logging.getLogger(__name__)

#: How long a fetched message stays invisible while its invocation runs (the host's
#: lease, renewed while running; functionTimeout bounds a run to 10 minutes here).
FETCH_VISIBILITY_SECONDS = 600


@dataclass
class DrainReport:
    """What one drain did, invocation by invocation."""

    invocations: list[Invocation] = field(default_factory=list)
    poisoned: int = 0
    #: Messages that were not base64: poisoned without an invocation.
    undecodable: int = 0
    #: The most invocations that ran at once.
    max_in_flight: int = 0

    @property
    def succeeded(self) -> int:
        """Invocations that returned (their message was deleted)."""
        return sum(1 for i in self.invocations if i.ok)

    @property
    def failed(self) -> int:
        """Invocations that raised (their message was retried or poisoned)."""
        return sum(1 for i in self.invocations if not i.ok)

    def merge(self, other: DrainReport) -> None:
        """Add another drain's figures to these."""
        self.invocations += other.invocations
        self.poisoned += other.poisoned
        self.undecodable += other.undecodable
        self.max_in_flight = max(self.max_in_flight, other.max_in_flight)


class QueueTriggerListener:
    """Feeds one queue function from its queue, with the host's semantics."""

    def __init__(
        self,
        host: FunctionsHost,
        function: str,
        *,
        environ: Mapping[str, str] | None = None,
        options: QueueOptions | None = None,
    ) -> None:
        self._host = host
        self._function = function
        environ = os.environ if environ is None else environ
        trigger = host.function(function).trigger
        self.queue_name = resolve_setting_references(str(trigger["queueName"]), environ)
        connection_setting = str(trigger.get("connection") or "AzureWebJobsStorage")
        connection = environ.get(connection_setting)
        if not connection:
            raise ValueError(f"the trigger's connection setting {connection_setting} is unset")
        self.options = options or QueueOptions.from_host_json(host.script_root)
        # Retries within seconds, like the .NET host's storage client (the Python SDK's
        # default first waits 15 s).
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3)
        self._queue = QueueClient.from_connection_string(
            connection, self.queue_name, retry_policy=retry
        )
        self._poison = QueueClient.from_connection_string(
            connection, f"{self.queue_name}-poison", retry_policy=retry
        )

    def close(self) -> None:
        """Close the storage clients."""
        self._queue.close()
        self._poison.close()

    def __enter__(self) -> QueueTriggerListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(
        self,
        *,
        max_messages: int | None = None,
        progress: Callable[[DrainReport], None] | None = None,
    ) -> DrainReport:
        """Run the visible messages through the function until none is left visible and
        none is running (or ``max_messages`` have been fetched)."""
        report = DrainReport()
        running: dict[Future[Invocation], QueueMessage] = {}
        fetched = 0
        exhausted = False
        while True:
            while not exhausted and len(running) <= self.options.new_batch_threshold:
                wanted = self.options.batch_size
                if max_messages is not None:
                    wanted = min(wanted, max_messages - fetched)
                batch = self._fetch(wanted) if wanted > 0 else []
                if not batch:
                    exhausted = True
                    break
                fetched += len(batch)
                for message in batch:
                    future = self._dispatch(message, report)
                    if future is not None:
                        running[future] = message
                report.max_in_flight = max(report.max_in_flight, len(running))
            if not running:
                return report
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                self._settle(running.pop(future), future.result(), report)
                if progress is not None:
                    progress(report)
            exhausted = exhausted and max_messages is not None and fetched >= max_messages

    def drain_until_empty(
        self,
        *,
        timeout: float = 120.0,
        progress: Callable[[DrainReport], None] | None = None,
    ) -> DrainReport:
        """Keep draining, as the host keeps polling, until the queue holds nothing, not
        even messages waiting out a visibility timeout after a failure."""
        total = DrainReport()
        deadline = time.monotonic() + timeout
        while True:
            total.merge(self.drain(progress=progress))
            left = self.depth()
            if left == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} message(s) still on {self.queue_name} after {timeout}s")
            time.sleep(0.2)

    def wait_for_messages(self, *, timeout: float = 120.0) -> None:
        """Return once the queue holds a message (the host polls an empty queue)."""
        deadline = time.monotonic() + timeout
        while self.depth() == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message on {self.queue_name} within {timeout}s")
            time.sleep(0.1)

    def depth(self) -> int:
        """Messages on the queue, visible or not (0 when it does not exist)."""
        return approximate_depth(self._queue)

    def _fetch(self, count: int) -> list[QueueMessage]:
        try:
            return list(
                self._queue.receive_messages(
                    messages_per_page=count,
                    max_messages=count,
                    visibility_timeout=FETCH_VISIBILITY_SECONDS,
                )
            )
        except ResourceNotFoundError:
            return []

    def _dispatch(self, message: QueueMessage, report: DrainReport) -> Future[Invocation] | None:
        stored = str(message.content)
        body = from_queue_text(stored) if self.options.message_encoding == "base64" else stored
        if body is None:
            log.error(
                "message %s on %s is not base64: moved to %s-poison without an invocation",
                message.id,
                self.queue_name,
                self.queue_name,
            )
            self._to_poison(message)
            report.poisoned += 1
            report.undecodable += 1
            return None
        now = datetime.now(UTC)
        delivery = QueueDelivery(
            id=str(message.id),
            pop_receipt=str(message.pop_receipt),
            body=body,
            dequeue_count=int(message.dequeue_count or 1),
            inserted_on=message.inserted_on or now,
            expires_on=message.expires_on or now,
            next_visible_on=message.next_visible_on or now,
        )
        return self._host.queue_invocation(self._function, delivery)

    def _settle(self, message: QueueMessage, invocation: Invocation, report: DrainReport) -> None:
        report.invocations.append(invocation)
        if invocation.ok:
            self._queue.delete_message(message)
            return
        count = int(message.dequeue_count or 1)
        if count >= self.options.max_dequeue_count:
            log.error(
                "message %s on %s failed %d times, moved to %s-poison: %s",
                message.id,
                self.queue_name,
                count,
                self.queue_name,
                invocation.error,
            )
            self._to_poison(message)
            report.poisoned += 1
            return
        self._queue.update_message(
            message, visibility_timeout=self.options.visibility_timeout_seconds
        )

    def _to_poison(self, message: QueueMessage) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._poison.create_queue()
        self._poison.send_message(str(message.content))
        self._queue.delete_message(message)
