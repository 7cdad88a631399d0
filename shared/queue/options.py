"""host.json's queue options, as the Functions host reads them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

#: App settings under this prefix override host.json's queue options.
HOST_SETTING_PREFIX = "AzureFunctionsJobHost__extensions__queues__"


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues``: how the host feeds the queue function."""

    max_dequeue_count: int = 5
    #: Delay before a failed message is visible again (the host's default: none).
    visibility_timeout_seconds: int = 0
    batch_size: int = 16
    #: Fetch again once no more than this many are still running.
    new_batch_threshold: int = 8
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, app_root: Path) -> QueueOptions:
        """``extensions.queues`` of host.json, each overridden by its app setting
        ``AzureFunctionsJobHost__extensions__queues__<name>`` as the host does; the
        host's defaults where neither says."""
        try:
            queues = json.loads((app_root / "host.json").read_text(encoding="utf-8"))
            queues = queues.get("extensions", {}).get("queues", {})
        except (OSError, ValueError):
            queues = {}

        def value(name: str, default: object) -> str:
            override = os.environ.get(f"{HOST_SETTING_PREFIX}{name}")
            return str(override if override else queues.get(name, default))

        hours, minutes, seconds = (
            int(part) for part in value("visibilityTimeout", "00:00:00").split(":")
        )
        batch_size = int(value("batchSize", cls.batch_size))
        return cls(
            max_dequeue_count=max(1, int(value("maxDequeueCount", cls.max_dequeue_count))),
            visibility_timeout_seconds=hours * 3600 + minutes * 60 + seconds,
            batch_size=batch_size,
            new_batch_threshold=int(value("newBatchThreshold", batch_size // 2)),
            message_encoding=value("messageEncoding", cls.message_encoding).lower(),
        )
