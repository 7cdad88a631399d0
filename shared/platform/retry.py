"""Retrying a call that failed for a transient reason: exponential backoff with full
jitter, and the one loop every non-HTTP client runs it in (RetryPolicy.call).

The HTTP clients retry in shared.platform.http, with the same policy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How a retry waits; clients take one so that their tests need not wait.
Sleep = Callable[[float], None]
#: Says why a failure is worth another attempt (the reason is logged), or None if not.
Transient = Callable[[Exception], str | None]


def any_of(*kinds: type[Exception]) -> Transient:
    """A :data:`Transient` that retries these exception types, named by their type."""

    def transient(error: Exception) -> str | None:
        return type(error).__name__ if isinstance(error, kinds) else None

    return transient


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed for a transient reason."""

    attempts: int = 4
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 20.0
    #: Never wait longer than this for a server's Retry-After.
    max_retry_after_seconds: float = 60.0
    #: How loudly each retry is logged.
    log_level: int = logging.WARNING

    @classmethod
    def for_conflicts(cls, attempts: int) -> RetryPolicy:
        """For an ETag-conditional write that another writer beat: read again soon, with
        jitter so the two do not collide again; routine, so logged at INFO."""
        return cls(
            attempts=attempts,
            initial_backoff_seconds=0.02,
            max_backoff_seconds=0.5,
            log_level=logging.INFO,
        )

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``; honours Retry-After when given.

        Jitter spreads the retries of parallel workers, so they do not stampede.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_seconds)
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security

    def call(
        self,
        operation: Callable[[], T],
        *,
        transient: Transient,
        what: str,
        sleep: Sleep | None = None,
    ) -> T:
        """Call ``operation`` until it returns, fails for a reason ``transient`` does not
        name, or every attempt is spent; its last failure is raised unchanged, for the
        caller to translate. ``what`` names the operation in the log."""
        attempt = 1
        while True:
            try:
                return operation()
            except Exception as error:
                reason = transient(error)
                if reason is None or attempt >= self.attempts:
                    raise
            delay = self.backoff(attempt)
            log.log(
                self.log_level,
                "%s failed (%s), retry %d/%d in %.2fs",
                what,
                reason,
                attempt,
                self.attempts - 1,
                delay,
            )
            (sleep or time.sleep)(delay)
            attempt += 1
