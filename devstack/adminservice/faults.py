"""Fault injection: failures, connection resets, latency and slow answers.

They act in front of authentication, as a throttling gateway (the CMG) would. A slow
answer delays the request and then carries it out, so a client that gave up waiting
still changed something.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from devstack.adminservice.odata import ODataError, _Answer
from devstack.adminservice.routes import ROUTES

FaultStatus = Literal[429, 500, 502, 503, 504]


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    retry_after: int | None
    route: str | None


def _check_route(route: str | None) -> None:
    if route is not None and route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; one of {ROUTES}")


class FaultPlan:
    """The pending faults, resets and slow answers, and the latency per route (thread-safe).

    A route of None means any route.
    """

    def __init__(self, wake: threading.Event) -> None:
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._resets: deque[str | None] = deque()
        self._slow: deque[tuple[str | None, float]] = deque()
        self._latency: dict[str | None, float] = {}
        self._wake = wake  # set on stop: cuts injected latency short

    # -- what a test plans ---------------------------------------------------------------

    @property
    def latency(self) -> float:
        """The latency of routes without their own."""
        return self._latency.get(None, 0.0)

    def set_latency(self, seconds: float, route: str | None = None) -> None:
        """Delay every answer of ``route`` by ``seconds``."""
        _check_route(route)
        with self._lock:
            self._latency[route] = max(0.0, seconds)

    def fail_next(
        self, n: int, status: FaultStatus, retry_after: int | None, route: str | None
    ) -> None:
        """Queue ``n`` failures behind those pending."""
        _check_route(route)
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, route) for _ in range(n))

    def storm(self, status: FaultStatus, count: int, retry_after: int | None) -> None:
        """Replace the pending failures with ``count`` of any route."""
        with self._lock:
            self._faults = deque(_Fault(status, retry_after, None) for _ in range(count))

    def reset_next(self, n: int, route: str | None) -> None:
        """Queue ``n`` connection resets."""
        with self._lock:
            self._resets.extend([route] * n)

    def slow_next(self, n: int, seconds: float, route: str | None) -> None:
        """Queue ``n`` answers delayed by ``seconds`` more."""
        _check_route(route)
        with self._lock:
            self._slow.extend([(route, max(0.0, seconds))] * n)

    def clear(self) -> None:
        """Drop everything pending, and all latency."""
        with self._lock:
            self._faults.clear()
            self._resets.clear()
            self._slow.clear()
            self._latency.clear()

    # -- what a request meets ------------------------------------------------------------

    def take_reset(self, route: str) -> bool:
        """Whether this request's connection is to be reset, unanswered."""
        with self._lock:
            for index, wanted in enumerate(self._resets):
                if wanted is None or wanted == route:
                    del self._resets[index]
                    return True
        return False

    def delay(self, route: str) -> None:
        """Wait the route's latency and a pending slow answer's extra."""
        with self._lock:
            seconds = self._latency.get(route, self._latency.get(None, 0.0))
            for index, (wanted, extra) in enumerate(self._slow):
                if wanted is None or wanted == route:
                    del self._slow[index]
                    seconds += extra
                    break
        if seconds > 0:
            self._wake.wait(seconds)

    def take_fault(self, route: str) -> _Answer | None:
        """The failure this request gets instead of an answer, if one is pending."""
        fault = self._take(route)
        if fault is None:
            return None
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None:
            headers = (("Retry-After", str(fault.retry_after)),)
        messages = {
            429: "Too many requests: the gateway is throttling this client.",
            503: "The service is unavailable.",
            500: "An error has occurred.",
        }
        message = messages.get(fault.status, f"Injected failure {fault.status}.")
        return ODataError(fault.status, message, headers=headers).answer()

    def _take(self, route: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.route is None or fault.route == route:
                    del self._faults[index]
                    return fault
        return None
