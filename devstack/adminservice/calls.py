"""The call log: every request as the simulator saw it, the requests being served, and
the simulator's own bugs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple


class StatusQuery(NamedTuple):
    """What one status message query asked for (``MessageID eq`` values, ``SiteCode eq``
    values and whether RecordID or Time is bounded, from the parts of the ``$filter``
    every row must satisfy), and how many rows it read from the site database."""

    entity_set: str
    filter: str | None
    orderby: str | None
    top: int | None
    skip: int
    message_ids: frozenset[int]
    site_codes: frozenset[str]
    record_id_bound: bool
    time_bound: bool
    rows_read: int = 0

    @property
    def selective(self) -> bool:
        """``MessageID eq`` (where the class has MessageID) and a RecordID bound or a
        ``$top``: what every query of a large status message table must be."""
        by_message = bool(self.message_ids) or self.entity_set == "SMS_StatMsgInsStrings"
        return by_message and (self.record_id_bound or self.top is not None)


class Call(NamedTuple):
    """One request as the simulator saw it (status 0: reset on purpose); ``query`` for
    the status message classes; ``response_bytes``: the length of the answer's body as
    sent (0 for a reset, and for HEAD)."""

    method: str
    path: str
    status: int
    upn: str | None
    route: str | None = None
    collection_id: str | None = None
    resource_id: int | None = None
    query: StatusQuery | None = None
    response_bytes: int = 0


@dataclass(slots=True)
class _CallInfo:
    method: str
    path: str
    upn: str | None = None
    route: str | None = None
    collection_id: str | None = None
    resource_id: int | None = None
    query: StatusQuery | None = None


class CallLog:
    """The logged calls, the requests in flight and the simulator bugs (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._errors: list[str] = []
        self._in_flight = 0

    def record(self, info: _CallInfo, status: int, response_bytes: int = 0) -> None:
        """Log one request with the status it got and the size of the answer's body."""
        with self._lock:
            self._calls.append(
                Call(info.method, info.path, status, info.upn, info.route,
                     info.collection_id, info.resource_id, info.query, response_bytes)
            )  # fmt: skip

    def record_bug(self, trace: str) -> None:
        """Keep the traceback of a simulator bug."""
        with self._lock:
            self._errors.append(trace)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Count the request as in flight while the block runs."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    @property
    def calls(self) -> list[Call]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        """Forget the logged calls."""
        with self._lock:
            self._calls.clear()

    @property
    def errors(self) -> list[str]:
        """The simulator bugs' tracebacks (a copy)."""
        with self._lock:
            return list(self._errors)

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)
