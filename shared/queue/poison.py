"""The poison queue: messages that failed maxDequeueCount times, parked for an operator."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from shared.domain.requests import RemediationRequest, decode
from shared.errors import CmRemediateError, QueueMessageError
from shared.platform.storage import storage_errors
from shared.queue.encoding import from_queue_text, to_queue_text
from shared.queue.sender import NEVER_EXPIRE


@dataclass(frozen=True)
class PoisonMessage:
    """One poisoned message, decoded when it can be."""

    id: str
    inserted_utc: datetime | None
    dequeue_count: int
    body: str
    request: RemediationRequest | None
    problem: str | None


class PoisonQueue:
    """List, show and requeue poisoned messages."""

    def __init__(self, poison: QueueClient, queue: QueueClient) -> None:
        self._poison = poison
        self._queue = queue

    def _wrap(self, message: object) -> PoisonMessage:
        stored = str(getattr(message, "content", ""))
        text = from_queue_text(stored)
        body = stored if text is None else text
        try:
            if text is None:
                raise QueueMessageError(
                    "not base64: sent without TextBase64EncodePolicy (requeue encodes it)"
                )
            request, problem = decode(text), None
        except QueueMessageError as error:
            request, problem = None, str(error)
        return PoisonMessage(
            id=str(getattr(message, "id", "")),
            inserted_utc=getattr(message, "inserted_on", None),
            dequeue_count=int(getattr(message, "dequeue_count", 0) or 0),
            body=body,
            request=request,
            problem=problem,
        )

    def peek(self) -> list[PoisonMessage]:
        """Up to 32 messages (the service's peek limit), oldest first, untouched."""
        with storage_errors(f"peek into {self._poison.queue_name}", "queue"):
            return [self._wrap(m) for m in self._poison_peek()]

    def _take(self, message_id: str | None) -> list[QueueMessage]:
        """Receive the wanted message (or every one); the rest become visible again."""
        taken: list[QueueMessage] = []
        passed_over: list[QueueMessage] = []
        try:
            while batch := list(
                self._poison.receive_messages(
                    messages_per_page=32, max_messages=32, visibility_timeout=60
                )
            ):
                for m in batch:
                    (taken if message_id is None or m.id == message_id else passed_over).append(m)
                if message_id is not None and taken:
                    break
        except ResourceNotFoundError:
            return []
        for message in passed_over:
            self._poison.update_message(message, visibility_timeout=0)
        return taken

    def show(self, message_id: str) -> PoisonMessage:
        """One message by ID (it stays in the poison queue, visible)."""
        with storage_errors(f"read {self._poison.queue_name}", "queue"):
            return self._show(message_id)

    def _show(self, message_id: str) -> PoisonMessage:
        for message in self._poison_peek():
            if message.id == message_id:
                return self._wrap(message)
        found = self._take(message_id)
        if not found:
            raise CmRemediateError(f"no message {message_id!r} in {self._poison.queue_name}")
        self._poison.update_message(found[0], visibility_timeout=0)
        return self._wrap(found[0])

    def _poison_peek(self) -> list[QueueMessage]:
        try:
            return list(self._poison.peek_messages(max_messages=32))
        except ResourceNotFoundError:
            return []

    @property
    def name(self) -> str:
        """The poison queue's name."""
        return str(self._poison.queue_name)

    def park(self, stored: str) -> None:
        """Put a message, as it is stored on a queue, on the poison queue never to
        expire: the host's own copy would expire after the service's default seven days."""
        with storage_errors(f"park a message in {self.name}", "queue"):
            with contextlib.suppress(ResourceExistsError):
                self._poison.create_queue()
            self._poison.send_message(stored, time_to_live=NEVER_EXPIRE)

    def requeue(self, message_id: str | None = None) -> int:
        """Move one message (by ID) or all of them back to the remediation queue."""
        with storage_errors(f"requeue from {self._poison.queue_name}", "queue"):
            return self._requeue(message_id)

    def _requeue(self, message_id: str | None) -> int:
        moved = 0
        with contextlib.suppress(ResourceExistsError):
            self._queue.create_queue()
        for message in self._take(message_id):
            # Re-encoded from the decoded text: a plain-text message comes back usable.
            self._queue.send_message(
                to_queue_text(self._wrap(message).body), time_to_live=NEVER_EXPIRE
            )
            self._poison.delete_message(message)
            moved += 1
        if message_id is not None and not moved:
            raise CmRemediateError(f"no message {message_id!r} in {self._poison.queue_name}")
        return moved
