"""Retry timing shared by every remote client: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed for a transient reason."""

    attempts: int = 4
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 20.0
    #: Never wait longer than this for a server's Retry-After.
    max_retry_after_seconds: float = 60.0

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``; honours Retry-After when given.

        Jitter spreads the retries of parallel workers, so they do not stampede.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_seconds)
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security
