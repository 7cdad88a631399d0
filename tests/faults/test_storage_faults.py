"""Azurite (the queue, the export state and the audit table) restarts in the middle of
the export and in the middle of the queue processing. The suite's Azurite is
persistent and stops gracefully, so the restart keeps the data; the clients (the app's,
and the host's queue listener's) see refused connections until it is back."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.errors import StorageError
from shared.export.exporter import ExportReport
from tests.conftest import InvocationFailed
from tests.faults.conftest import Processed, Scenario, Trigger, error_names, restart_later

pytestmark = [pytest.mark.faults, pytest.mark.stack]

MakeScenario = Callable[..., Scenario]
#: How long Azurite stays down (it then needs about a second to start).
OUTAGE_SECONDS = 1.0
#: A call still running this long after Azurite stopped answering was waiting on it.
STILL_RUNNING_SECONDS = 0.05
#: What the queue function does with the audit table while it handles a message.
AUDIT_CALLS = ("find", "record", "settle", "kind_of")
CLAIM_CALLS = ("take", "abandon")
GUARD_CALLS = ("reserve", "flush")


class Outage:
    """Stops Azurite when called (a :class:`Trigger` action) and starts it again in the
    background after :data:`OUTAGE_SECONDS`; remembers when it stopped answering and
    when it answered again."""

    def __init__(self, s: Scenario) -> None:
        self._s = s
        self.began: float | None = None
        self.ended: float | None = None
        self.healer: threading.Thread | None = None

    def __call__(self) -> None:
        self._s.azurite.stop()
        self.began = time.monotonic()
        self.healer = restart_later(self._heal, OUTAGE_SECONDS)

    def _heal(self) -> None:
        self._s.azurite.start()  # returns once blob, queue and table accept connections
        self.ended = time.monotonic()

    def wait_healed(self) -> None:
        if self.healer is not None:
            self.healer.join(timeout=60)

    def met(self, started: float, finished: float) -> bool:
        """Whether a call that ran from ``started`` to ``finished`` met the outage: it
        began while Azurite did not answer, or was still waiting on it then."""
        if self.began is None:
            return False
        ended = self.ended if self.ended is not None else float("inf")
        if started >= self.began:
            return started < ended
        return finished > self.began + STILL_RUNNING_SECONDS


def calls_meeting(
    outage: Outage, monkeypatch: pytest.MonkeyPatch, target: object, *names: str
) -> list[bool]:
    """Wrap ``target.<name>`` for each name: for each call, whether it met the outage
    (so the test knows the outage really met the code under test, whichever of the
    invocations running at once it met)."""
    seen: list[bool] = []
    for name in names:
        original = getattr(target, name)

        def wrapper(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return _original(*args, **kwargs)
            finally:
                seen.append(outage.met(started, time.monotonic()))

        monkeypatch.setattr(target, name, functools.wraps(original)(wrapper))
    return seen


def test_azurite_restart_mid_export(
    scenario: MakeScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario(seed=701)
    runtime = s.app_runtime()
    outage = Outage(s)
    sends = calls_meeting(outage, monkeypatch, runtime.queue, "send")
    stop = Trigger[ExportReport](lambda report: report.enqueued > 0, outage)
    runs: list[ExportReport] = []
    # If the outage outlasts the storage client's retries, the run fails, typed; what
    # it enqueued stays, and the next timer tick goes on from its checkpoint.
    try:
        runs.append(s.export(progress=stop))
    except InvocationFailed as failed:
        assert failed.type_name in error_names(StorageError), failed
    outage.wait_healed()
    assert stop.fired and s.azurite.running
    assert any(sends)  # an enqueue ran into the outage
    # Later runs complete it (the first one may already have).
    for _ in range(3):
        report = s.export()
        runs.append(report)
        if all(site.complete for site in report.sites.values()):
            break
    assert all(site.complete for site in runs[-1].sites.values())
    assert sum(r.enqueued for r in runs) >= s.ledger.requests
    s.process()
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_azurite_restart_mid_processing(
    scenario: MakeScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario(seed=702)
    runtime = s.app_runtime()
    assert s.export().enqueued == s.ledger.requests
    outage = Outage(s)
    # The queue function's audit lookups and writes (several invocations run at once).
    audit_calls = calls_meeting(outage, monkeypatch, runtime.audit, *AUDIT_CALLS)
    claim_calls = calls_meeting(outage, monkeypatch, runtime.claims, *CLAIM_CALLS)
    guard_calls = calls_meeting(outage, monkeypatch, runtime.guard, *GUARD_CALLS)
    stop = Trigger[Processed](lambda report: report.succeeded >= 10, outage)
    s.process(progress=stop)
    outage.wait_healed()
    assert stop.fired and s.azurite.running
    # a message's audit, claim or guard lookup or write ran into the outage
    assert any(audit_calls) or any(claim_calls) or any(guard_calls)
    s.settle(runtime)
    s.assert_ledger(runtime)
