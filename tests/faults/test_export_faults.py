"""Faults during the export: the site database stops mid-run, the process is killed
between enqueue and checkpoint, two runs overlap. Every export is a tick of the
``export_status_messages`` timer run by the worker (a second instance runs in a child
process with a Functions host of its own). Each scenario then processes the queue
through the host's queue listener and must end with the ledger: one expected outcome
per (status message, rule), no device added twice or without a rule, nothing left
queued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.export.exporter import ExportReport
from shared.export.watermark_store import WatermarkStore
from shared.platform.retry import RetryPolicy
from tests.conftest import InvocationFailed
from tests.faults.conftest import PAGE_SIZE, REPO, Scenario, Trigger
from tests.faults.crash_export import KILLED
from tests.faults.overlap_export import READY

pytestmark = [pytest.mark.faults, pytest.mark.stack]

MakeScenario = Callable[..., Scenario]
#: The shortest blob lease Azure Storage grants: how long a killed run blocks its sites.
LEASE_SECONDS = 15


def after_first_enqueue(action: Callable[[], None]) -> Trigger[ExportReport]:
    """Run ``action`` once the export has enqueued its first page (and read no more)."""
    return Trigger(lambda report: report.enqueued > 0, action)


def second_instance(module: str, *args: object) -> list[str]:
    """The command line of a second app instance: a child process that starts a
    Functions host of its own (``tests.faults.crash_export``, ``overlap_export``)."""
    return [sys.executable, "-m", f"tests.faults.{module}", *(str(a) for a in args)]


def test_site_database_restart_mid_export_is_ridden_through(scenario: MakeScenario) -> None:
    s = scenario(seed=501)
    runtime = s.app_runtime()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        # The client's retry policy is waiting: the server is back before the next try.
        waits.append(seconds)
        if not s.site_db.running:
            s.site_db.start()
        time.sleep(seconds)

    stop = after_first_enqueue(lambda: s.site_db.stop(keep_data=True))
    s.install_exporter(runtime, database=s.site_database_client(sleep=sleep))
    report = s.export(progress=stop)
    assert stop.fired and len(waits) >= 1  # the outage really cost a retry
    assert all(site.complete for site in report.sites.values())
    assert report.enqueued == s.ledger.requests
    s.process()
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_site_database_outage_fails_the_run_then_the_next_completes(
    scenario: MakeScenario,
) -> None:
    s = scenario(seed=502)
    runtime = s.app_runtime()
    waits: list[float] = []
    # No real waiting: the server stays down through every retry anyway.
    s.install_exporter(runtime, database=s.site_database_client(sleep=waits.append))
    stop = after_first_enqueue(lambda: s.site_db.stop(keep_data=True))
    with pytest.raises(InvocationFailed) as failed:
        s.export(progress=stop)
    # The host logged the run as failed with the typed error, after every retry.
    assert failed.value.type_name == "SiteDatabaseUnavailable", failed.value
    assert len(waits) == RetryPolicy().attempts - 1
    assert stop.report is not None
    sent_before = stop.report.enqueued
    assert 0 < sent_before < s.ledger.requests

    s.site_db.start()
    report = s.export()  # the next tick
    assert all(site.complete for site in report.sites.values())
    # The failed run saved how far it got: the next one sent only the rest.
    assert sent_before + report.enqueued == s.ledger.requests
    s.process()
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_killed_between_enqueue_and_checkpoint(scenario: MakeScenario) -> None:
    s = scenario(seed=503)
    # A second instance, killed in the middle of its export tick.
    child = subprocess.run(
        second_instance("crash_export", LEASE_SECONDS, PAGE_SIZE),
        cwd=REPO,
        env={**os.environ, **s.settings_values()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == KILLED, child.stderr[-3000:]
    runtime = s.app_runtime()
    # Everything was enqueued, nothing checkpointed.
    assert s.depths() == (s.ledger.requests, 0)
    for site in s.workload.sites:
        assert runtime.watermarks.load(site) == (None, None)

    s.install_exporter(
        runtime,
        watermarks=WatermarkStore(
            runtime.storage.container(runtime.settings.state_container),
            lease_seconds=LEASE_SECONDS,
        ),
    )
    # The dead run's site leases still hold: the next tick leaves its sites alone...
    blocked = s.export()
    assert blocked.enqueued == 0
    assert {site for site, r in blocked.sites.items() if r.busy} == set(s.workload.sites)
    # ...but only until they expire; then a tick exports everything again.
    resent = 0
    deadline = time.monotonic() + LEASE_SECONDS + 30
    while True:
        report = s.export()
        resent += report.enqueued
        if not any(r.busy for r in report.sites.values()):
            break
        assert time.monotonic() < deadline, "the killed run's lease never expired"
        time.sleep(1)
    assert resent == s.ledger.requests  # at-least-once: re-sent, never lost
    s.process()
    assert s.figures.deliveries == 2 * s.ledger.requests  # every request came twice
    s.settle(runtime)
    s.assert_ledger(runtime)


def test_two_exports_at_once(scenario: MakeScenario) -> None:
    s = scenario(seed=504)
    runtime = s.app_runtime()
    exporter = s.install_exporter(runtime)
    # The other instance: a child process with a host of its own, started and waiting.
    other = subprocess.Popen(
        second_instance("overlap_export", PAGE_SIZE),
        cwd=REPO,
        env={**os.environ, **s.settings_values()},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results: list[str] = []
    other_done = threading.Event()

    def collect() -> None:
        out, err = other.communicate(timeout=120)
        results.extend([out, err])
        other_done.set()

    def hold(report: ExportReport) -> None:
        # After its first page this tick holds the leases of the sites it took: keep
        # them until the other instance's tick has run, so the runs overlap whatever
        # the timing.
        if not held:
            held.append(other_done.wait(timeout=60))

    held: list[bool] = []

    try:
        assert other.stdout is not None and other.stdin is not None
        if other.stdout.readline().strip() != READY:
            other.kill()
            pytest.fail(f"the other instance did not start:\n{other.communicate()[1][-3000:]}")
        # Both timer ticks fire at once, one in each instance.
        other.stdin.write("go\n")
        other.stdin.flush()
        exporter.progress = hold
        tick = s.host.timer_invocation("export_status_messages")
        collector = threading.Thread(target=collect, name="other-instance")
        collector.start()
        invocation = tick.result(timeout=120)
        collector.join(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert invocation.ok, invocation.error
    assert other.returncode == 0, results[1][-3000:] if results else "no answer"
    answer: dict[str, Any] = json.loads(results[0].splitlines()[-1])
    assert answer["ok"], answer["error"]
    mine = exporter.reports[-1]
    theirs: dict[str, dict[str, Any]] = answer["sites"]
    # They overlapped: every site was exported by one tick and found held by the other.
    for site in s.workload.sites:
        assert mine.sites[site].busy != theirs[site]["busy"], (site, mine.sites, theirs)
    later = s.export()  # whatever a busy site left, the next tick takes
    # The site leases kept the runs apart: every request was sent exactly once.
    sent = mine.enqueued + sum(int(r["enqueued"]) for r in theirs.values())
    assert sent + later.enqueued == s.ledger.requests
    s.process()
    s.settle(runtime)
    s.assert_ledger(runtime)
