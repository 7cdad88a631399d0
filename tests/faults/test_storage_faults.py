"""Azurite (the queue, the export state and the audit table) restarts in the middle of
the export and in the middle of the queue processing. The suite's Azurite is
persistent and stops gracefully, so the restart keeps the data; the clients see
refused connections until it is back."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from shared.errors import StorageError
from shared.export import ExportReport
from shared.processing import ProcessReport
from tests.faults.conftest import Scenario, Trigger, restart_later

pytestmark = [pytest.mark.faults, pytest.mark.stack]

MakeScenario = Callable[..., Scenario]
#: How long Azurite stays down (it then needs about a second to start).
OUTAGE_SECONDS = 1.0


def outage(s: Scenario, healers: list[threading.Thread]) -> Callable[[], None]:
    """Stop Azurite now; start it again in the background after the outage."""

    def stop() -> None:
        s.azurite.stop()
        healers.append(restart_later(s.azurite.start, OUTAGE_SECONDS))

    return stop


def calls_while_down(
    s: Scenario, monkeypatch: pytest.MonkeyPatch, target: object, name: str
) -> list[bool]:
    """Wrap ``target.name``: for each call, whether Azurite was down when it began
    (so the test knows the outage really met the code under test)."""
    original = getattr(target, name)
    seen: list[bool] = []

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seen.append(not s.azurite.running)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
    return seen


def test_azurite_restart_mid_export(
    scenario: MakeScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario(seed=701)
    runtime = s.runtime()
    sends = calls_while_down(s, monkeypatch, runtime.queue, "send")
    healers: list[threading.Thread] = []
    stop = Trigger[ExportReport](lambda report: report.enqueued > 0, outage(s, healers))
    runs: list[ExportReport] = []
    # If the outage outlasts the storage client's retries, the run fails, typed; what
    # it enqueued stays, and the next timer run goes on from its checkpoint.
    with contextlib.suppress(StorageError):
        runs.append(s.exporter(runtime).run(progress=stop))
    for healer in healers:
        healer.join(timeout=60)
    assert stop.fired and s.azurite.running
    assert any(sends)  # an enqueue ran into the outage
    # Later runs complete it (the first one may already have).
    for _ in range(3):
        report = s.exporter(runtime).run()
        runs.append(report)
        if all(site.complete for site in report.sites.values()):
            break
    assert all(site.complete for site in runs[-1].sites.values())
    assert sum(r.enqueued for r in runs) >= s.ledger.requests
    s.process(runtime)
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_azurite_restart_mid_processing(
    scenario: MakeScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario(seed=702)
    runtime = s.runtime()
    assert s.exporter(runtime).run().enqueued == s.ledger.requests
    lookups = calls_while_down(s, monkeypatch, runtime.audit, "find")
    healers: list[threading.Thread] = []
    stop = Trigger[ProcessReport](lambda report: report.processed >= 10, outage(s, healers))
    s.process(runtime, progress=stop)
    for healer in healers:
        healer.join(timeout=60)
    assert stop.fired and s.azurite.running
    assert any(lookups)  # a message's audit lookup ran into the outage
    s.settle(runtime)
    s.assert_ledger(runtime)
