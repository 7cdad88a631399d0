"""What the queue function does with one delivery, as the Functions host hands it over.

The host retries a delivery that raises until its ``maxDequeueCount``-th attempt, then
copies the message to ``<queue>-poison`` with the storage service's default time to
live: seven days, which the host does not let anyone change. A request parked there
for an operator would quietly vanish a week later. So on the host's last attempt a
failure is parked here instead, in the same poison queue but never to expire, and the
invocation returns so that the host deletes the original. Every earlier attempt raises
as before. Should parking itself fail, the original error is raised and the host's
own poison handling (seven days) still applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.domain.outcomes import Outcome
from shared.domain.ports import MessageHandler
from shared.queue.encoding import to_queue_text
from shared.queue.poison import PoisonQueue

log = logging.getLogger(__name__)


@dataclass
class QueueFunction:
    """Handle one delivery; park it for an operator when the host's last attempt fails."""

    #: The remediator.
    handler: MessageHandler
    poison: PoisonQueue
    max_dequeue_count: int

    def handle(
        self, body: bytes, *, message_id: str | None, dequeue_count: int | None
    ) -> Outcome | None:
        """The outcome (None: requeued for later); raises to have the host retry."""
        attempt = dequeue_count or 1
        try:
            return self.handler.handle(body, message_id=message_id)
        except Exception as error:
            if attempt < self.max_dequeue_count:
                raise
            try:
                self.poison.park(to_queue_text(body))
            except Exception:
                log.exception("message %s: parking in the poison queue failed", message_id)
                raise error from None
            log.error(
                "message %s failed on the host's last attempt (%d of %d) and is parked in "
                "the poison queue, where it does not expire: fix the cause, then "
                "`cmremediate poison requeue --all`. The failure: %s",
                message_id or "-",
                attempt,
                self.max_dequeue_count,
                error,
            )
            return None
        finally:
            self.handler.run_deferred()
