"""Calls with a deadline: each runs on a daemon thread; the caller waits until the
deadline and not a moment longer.

Why: against a dependency that takes the TCP connection and never answers, the
clients' own timeouts and retries add up to minutes (the ODBC login timeout times the
attempts, MSAL's 30 s, the storage SDK's read timeout times its retries), and some
calls have none. A probe that misses its deadline is abandoned, never joined: a daemon
thread holds up neither the answer nor the interpreter's exit.

Why at most one in flight per name: a monitor polling the health endpoint every few
seconds against a black-holed dependency would otherwise leave one more stuck thread
behind on every call. A later caller waits on the probe already running instead, and
learns how long it has been waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Deadline:
    """A point in time (``time.monotonic()``) and the budget it was set with."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """``seconds`` from now."""
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())


class _Flight(Generic[T]):
    """One running call and, once it ends, its value or exception."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.finished = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


@dataclass(frozen=True)
class Answer(Generic[T_co]):
    """How a probe stood when its caller's deadline came (or it ended before)."""

    done: bool
    value: T_co | None
    error: BaseException | None
    #: Seconds since the probe started.
    age: float
    #: Started by an earlier caller, still in flight when this one asked.
    inherited: bool

    def late(self, deadline: Deadline) -> str:
        """What to say about a probe that has not answered by ``deadline``."""
        text = f"no answer within {deadline.seconds:g} s"
        if self.inherited:
            text += (
                f" (a probe started {self.age:.0f} s ago by an earlier call is still waiting; "
                "no new one starts until it ends)"
            )
        return text


class Pending(Generic[T]):
    """A probe as one caller sees it."""

    def __init__(self, flight: _Flight[T], *, inherited: bool) -> None:
        self._flight = flight
        self._inherited = inherited

    def wait(self, deadline: Deadline) -> Answer[T]:
        """Wait until the probe ends or ``deadline`` passes, whichever is first."""
        flight = self._flight
        done = flight.finished.wait(deadline.remaining())
        return Answer(
            done=done,
            value=flight.value if done else None,
            error=flight.error if done else None,
            age=time.monotonic() - flight.started,
            inherited=self._inherited,
        )


class Probes:
    """Starts named probes, at most one in flight per name. The runtime holds one, so
    that is one per dependency per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[Any]] = {}

    def start(self, name: str, call: Callable[[], T]) -> Pending[T]:
        """Run ``call`` on a daemon thread, or hand out the one still running as ``name``."""
        with self._lock:
            running = self._flights.get(name)
            if running is not None:
                return Pending(running, inherited=True)
            flight: _Flight[T] = _Flight()
            self._flights[name] = flight
        thread = threading.Thread(
            target=self._run, args=(name, flight, call), name=f"probe: {name}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as error:  # no thread to be had: a failed probe, not a stuck one
            flight.error = error
            self._land(name, flight)
        return Pending(flight, inherited=False)

    def _run(self, name: str, flight: _Flight[T], call: Callable[[], T]) -> None:
        try:
            flight.value = call()
        except BaseException as error:  # handed to whoever waits, reported there
            flight.error = error
        finally:
            self._land(name, flight)

    def _land(self, name: str, flight: _Flight[Any]) -> None:
        """The probe ended: the next caller starts a new one."""
        with self._lock:
            if self._flights.get(name) is flight:
                del self._flights[name]
        flight.finished.set()

    def in_flight(self) -> list[str]:
        """Names of the probes still running."""
        with self._lock:
            return sorted(self._flights)
