"""Faults during the export: the site database stops mid-run, the process is killed
between enqueue and checkpoint, two runs overlap. Each scenario then processes the
queue and must end with the ledger: one expected outcome per (status message, rule),
no device added twice or without a rule, nothing left queued."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from shared.errors import SiteDatabaseUnavailable
from shared.export import ExportReport
from shared.retry import RetryPolicy
from shared.watermark import WatermarkStore
from tests.faults.conftest import PAGE_SIZE, REPO, Scenario, Trigger
from tests.faults.crash_export import KILLED

pytestmark = [pytest.mark.faults, pytest.mark.stack]

MakeScenario = Callable[..., Scenario]
#: The shortest blob lease Azure Storage grants: how long a killed run blocks its sites.
LEASE_SECONDS = 15


def after_first_enqueue(action: Callable[[], None]) -> Trigger[ExportReport]:
    """Run ``action`` once the export has enqueued its first page (and read no more)."""
    return Trigger(lambda report: report.enqueued > 0, action)


def test_site_database_restart_mid_export_is_ridden_through(scenario: MakeScenario) -> None:
    s = scenario(seed=501)
    runtime = s.runtime()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        # The client's retry policy is waiting: the server is back before the next try.
        waits.append(seconds)
        if not s.site_db.running:
            s.site_db.start()
        time.sleep(seconds)

    stop = after_first_enqueue(lambda: s.site_db.stop(keep_data=True))
    database = s.site_database_client(sleep=sleep)
    report = s.exporter(runtime, database=database).run(progress=stop)
    assert stop.fired and len(waits) >= 1  # the outage really cost a retry
    assert all(site.complete for site in report.sites.values())
    assert report.enqueued == s.ledger.requests
    s.process(runtime)
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_site_database_outage_fails_the_run_then_the_next_completes(
    scenario: MakeScenario,
) -> None:
    s = scenario(seed=502)
    runtime = s.runtime()
    waits: list[float] = []
    # No real waiting: the server stays down through every retry anyway.
    database = s.site_database_client(sleep=waits.append)
    stop = after_first_enqueue(lambda: s.site_db.stop(keep_data=True))
    with pytest.raises(SiteDatabaseUnavailable):
        s.exporter(runtime, database=database).run(progress=stop)
    assert len(waits) == RetryPolicy().attempts - 1  # the typed error came after every retry
    assert stop.report is not None
    sent_before = stop.report.enqueued
    assert 0 < sent_before < s.ledger.requests

    s.site_db.start()
    report = s.exporter(runtime, database=database).run()
    assert all(site.complete for site in report.sites.values())
    # The failed run saved how far it got: the next one sent only the rest.
    assert sent_before + report.enqueued == s.ledger.requests
    s.process(runtime)
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_killed_between_enqueue_and_checkpoint(scenario: MakeScenario) -> None:
    s = scenario(seed=503)
    child = subprocess.run(
        [sys.executable, "-m", "tests.faults.crash_export", str(LEASE_SECONDS), str(PAGE_SIZE)],
        cwd=REPO,
        env={**os.environ, **s.settings_values()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == KILLED, child.stderr[-3000:]
    runtime = s.runtime()
    # Everything was enqueued, nothing checkpointed.
    assert s.depths() == (s.ledger.requests, 0)
    for site in s.workload.sites:
        assert runtime.watermarks.load(site) == (None, None)

    watermarks = WatermarkStore(
        runtime.storage.container(runtime.settings.state_container), lease_seconds=LEASE_SECONDS
    )
    exporter = s.exporter(runtime, watermarks=watermarks)
    # The dead run's site leases still hold: the next run leaves its sites alone...
    blocked = exporter.run()
    assert blocked.enqueued == 0
    assert {site for site, r in blocked.sites.items() if r.busy} == set(s.workload.sites)
    # ...but only until they expire; then a run exports everything again.
    resent = 0
    deadline = time.monotonic() + LEASE_SECONDS + 30
    while True:
        report = exporter.run()
        resent += report.enqueued
        if not any(r.busy for r in report.sites.values()):
            break
        assert time.monotonic() < deadline, "the killed run's lease never expired"
        time.sleep(1)
    assert resent == s.ledger.requests  # at-least-once: re-sent, never lost
    s.process(runtime)
    assert s.figures.deliveries == 2 * s.ledger.requests  # every request came twice
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_two_exports_at_once(scenario: MakeScenario) -> None:
    s = scenario(seed=504)
    exporters = [s.exporter(s.runtime()) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    reports: list[ExportReport] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            reports.append(exporters[index].run())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(reports) == 2
    # They overlapped: one found a site the other one held.
    assert any(site.busy for report in reports for site in report.sites.values())
    runtime = s.runtime()
    later = s.exporter(runtime).run()  # whatever a busy site left, the next run takes
    # The site leases kept the runs apart: every request was sent exactly once.
    assert sum(r.enqueued for r in reports) + later.enqueued == s.ledger.requests
    s.process(runtime)
    s.settle(runtime)
    s.assert_ledger(runtime)
