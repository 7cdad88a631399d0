"""Storage failures the SDK's own retries did not ride out reach the operator as a
typed error naming what failed, not a raw SDK traceback."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.errors import CmRemediateError, StorageError
from shared.queue.local_host import LocalQueueHost
from shared.queue.options import QueueOptions
from shared.queue.poison import PoisonQueue


class DownQueue:
    queue_name = "remediation"

    def receive_messages(self, **kwargs):
        raise ServiceRequestError("connection refused")


def test_an_unreachable_queue_is_a_storage_error():
    processor = LocalQueueHost(
        DownQueue(),  # type: ignore[arg-type]
        PoisonQueue(DownQueue(), DownQueue()),  # type: ignore[arg-type]
        handler=None,  # type: ignore[arg-type]
        options=QueueOptions(),
    )
    with pytest.raises(StorageError) as caught:
        processor.drain()
    assert isinstance(caught.value, CmRemediateError)
    assert "receive from remediation" in str(caught.value)
    assert "AzureWebJobsStorage" in str(caught.value)


def test_an_unreachable_poison_queue_is_a_storage_error():
    class DownPoison(DownQueue):
        queue_name = "remediation-poison"

        def peek_messages(self, **kwargs):
            raise ServiceRequestError("connection refused")

        def create_queue(self):
            raise ServiceRequestError("connection refused")

    poison = PoisonQueue(DownPoison(), DownPoison())  # type: ignore[arg-type]
    for action in (poison.peek, poison.requeue, lambda: poison.show("m-1")):
        with pytest.raises(StorageError, match="remediation-poison"):
            action()
