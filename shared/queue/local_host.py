"""The command line's stand-in for the Functions host: drains the remediation queue in
this process, with the host's semantics (production never runs it; there the host
hands each delivery to ``shared.app.queue_function``).

Used by ``cmremediate process``. Like the queue trigger: a message is deleted
only when handling returns; a failure leaves it to reappear after the visibility
timeout; after ``maxDequeueCount`` failed attempts (host.json) it moves to
``<queue>-poison``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from azure.storage.queue import QueueClient, QueueMessage

from shared.domain.ports import MessageHandler
from shared.errors import CmRemediateError, QueueMessageError
from shared.platform.storage import storage_errors
from shared.queue.encoding import from_queue_text
from shared.queue.options import QueueOptions
from shared.queue.poison import PoisonQueue

log = logging.getLogger(__name__)


@dataclass
class ProcessReport:
    """What one drain did."""

    processed: int = 0
    failed: int = 0
    poisoned: int = 0
    requeued: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class LocalQueueHost:
    """The Functions host's queue loop, run locally: receives a batch, hands each
    message to the handler (the remediator), deletes or poisons it."""

    def __init__(
        self,
        queue: QueueClient,
        poison: PoisonQueue,
        handler: MessageHandler,
        options: QueueOptions,
    ) -> None:
        self._queue = queue
        self._poison = poison
        self._handler = handler
        self._options = options

    def drain(
        self,
        *,
        max_messages: int | None = None,
        progress: Callable[[ProcessReport], None] | None = None,
    ) -> ProcessReport:
        """Process visible messages until none is left (or ``max_messages``);
        ``progress`` hears about every message."""
        report = ProcessReport()
        while max_messages is None or report.processed + report.failed < max_messages:
            wanted = self._options.batch_size
            if max_messages is not None:
                wanted = min(wanted, max_messages - report.processed - report.failed)
            with storage_errors(f"receive from {self._queue.queue_name}", "queue"):
                batch = list(
                    self._queue.receive_messages(
                        messages_per_page=wanted,
                        max_messages=wanted,
                        visibility_timeout=self._options.visibility_timeout_seconds,
                    )
                )
            if not batch:
                break
            for message in batch:
                self._one(message, report)
                if progress is not None:
                    progress(report)
            self._handler.run_deferred()
        return report

    def _one(self, message: QueueMessage, report: ProcessReport) -> None:
        stored = str(message.content)
        message_id = str(message.id)
        dequeue_count = int(message.dequeue_count or 1)
        try:
            text = from_queue_text(stored)
            if text is None:
                # The host cannot bind such a message either: it fails until poisoned.
                raise QueueMessageError(
                    "the message is not base64: was it sent without TextBase64EncodePolicy?"
                )
            outcome = self._handler.handle(text, message_id=message_id)
        except CmRemediateError as error:
            report.failed += 1
            if dequeue_count >= self._options.max_dequeue_count:
                self._poison.park(stored)
                with storage_errors(
                    f"delete message {message_id} (now in {self._poison.name})", "queue"
                ):
                    self._queue.delete_message(message)
                report.poisoned += 1
                log.error(
                    "message %s failed %d times, moved to %s: %s",
                    message_id,
                    dequeue_count,
                    self._poison.name,
                    error,
                )
            else:
                log.warning(
                    "message %s failed (attempt %d of %d), it will be retried: %s",
                    message_id,
                    dequeue_count,
                    self._options.max_dequeue_count,
                    error,
                )
            return
        # Not deleted means delivered again later: the audit row makes that harmless.
        with storage_errors(f"delete message {message_id}", "queue"):
            self._queue.delete_message(message)
        report.processed += 1
        if outcome is None:
            report.requeued += 1
        else:
            report.outcomes[outcome.kind] += 1
