"""The remediation-wave benchmark (``bench/upgrade_wave.py``, the README's "Benchmarks") runs end
to end at N=200 and writes its figures. It proves the script works; it never asserts
how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.stack

BENCH = Path(__file__).resolve().parents[2] / "bench"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load_wave() -> ModuleType:
    # bench/ holds scripts, not a package, and its helpers import one another by module
    # name: bench/ goes on the path, after the standard library (which has a ``wave``).
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_wave", BENCH / "upgrade_wave.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wave_run(local_ca, functions_host, tmp_path_factory):
    """One run at N=200 through the session's worker host (one per process) and CA (the
    user realm responder on port 443 is shared per CA), with a short baseline."""
    wave = _load_wave()
    out = tmp_path_factory.mktemp("wave-results")
    options = wave.parse_args(["--messages", "200", "--baseline-sample", "20", "--out", str(out)])
    lines: list[str] = []
    run = wave.run_wave(options, ca=local_ca, host=functions_host, echo=lines.append)
    results = json.loads(run.json_path.read_text(encoding="utf-8"))
    return run, out, results, lines


def _positive(value, kind=float):
    return isinstance(value, kind) and not isinstance(value, bool) and value > 0


def test_the_json_holds_every_figure_with_sane_values(wave_run):
    run, out, results, lines = wave_run
    assert run.json_path.parent == out
    parameters = results["parameters"]
    assert parameters["messages"] == 200 and parameters["latency_ms"] == 50.0
    assert parameters["identity"] == "sitedb" and parameters["devices"] == 100

    export = results["export"]
    assert export["status_messages_read"] == 200  # the wave is all 39997 messages
    assert export["enqueued"] == export["expected_requests"] > 0
    for key in ("seconds", "rows_per_second", "enqueued_per_second", "peak_rss_mib"):
        assert _positive(export[key]), key
    # One tick: the list of sites, then a page of messages and one of their strings.
    assert export["sql"]["app_by_kind"]["sites"] == 1
    assert export["sql"]["app_by_kind"]["status message pages"] >= 1
    assert _positive(export["sql"]["all_statements"], int)

    drain = results["drain"]
    for key in (
        "seconds",
        "requests_per_second",
        "devices_added_per_second",
        "distinct_devices_per_second",
        "membership_seconds_p50",
        "membership_seconds_p95",
        "peak_rss_mib",
    ):
        assert _positive(drain[key]), key
    assert drain["membership_seconds_p50"] <= drain["membership_seconds_p95"]
    assert drain["invocations"] >= export["enqueued"]
    assert 0 < drain["max_in_flight"] <= drain["batch_size"] + drain["new_batch_threshold"]
    assert _positive(drain["token_requests"], int)
    kinds = drain["sql"]["app_by_kind"]  # identity from the site database
    assert kinds["device lookups (v_R_System)"] >= drain["outcomes"]["added"]

    admin = results["adminservice"]
    assert _positive(admin["calls_per_added_device"])
    assert _positive(admin["response_bytes_per_added_device"])
    assert admin["by_route"]["AddMembershipRule"]["calls"] == drain["outcomes"]["added"]

    baseline = results["baseline"]
    assert baseline["devices"] == baseline["members_after"] == 20
    assert baseline["calls_per_device"] == 3.0  # lookup, AddMembershipRule, RequestRefresh
    assert _positive(baseline["devices_per_second"])

    bound = results["bound"]
    assert bound["concurrency"] == drain["batch_size"] + drain["new_batch_threshold"]
    assert _positive(bound["devices_per_second"])
    assert _positive(bound["devices_per_second_at_worker_threads"])
    # the functions' own CPU, from the worker's pool threads, is part of the process's
    cpu = drain["cpu"]
    assert 0 < cpu["app_cpu_seconds"] <= cpu["this_process_cpu_seconds"]
    assert _positive(drain["app_cpu_ms_per_request"])
    assert bound["cpu_devices_per_second"] == 1000 / drain["app_cpu_ms_per_added_device"]

    raw = results["raw_queue"]
    assert raw["messages"] == 200 and _positive(raw["messages_per_second"])
    assert _positive(raw["export_enqueue_share"])
    assert any(line.startswith("comparison") for line in lines)


def test_the_chart_is_a_png_beside_the_json(wave_run):
    run, out, _, lines = wave_run
    assert run.png_path.parent == out and run.png_path.stem == run.json_path.stem
    assert run.png_path.read_bytes()[:8] == PNG_SIGNATURE
    assert any(str(run.png_path) in line for line in lines)


def test_every_added_device_has_exactly_one_direct_rule(wave_run):
    _, _, results, _ = wave_run
    duplicates, added = results["duplicates"], results["drain"]["outcomes"]["added"]
    assert added > 0
    assert duplicates["direct_rules_per_added_device"] == {"1": added}
    assert duplicates["every_added_device_has_one_rule"] is True
    assert duplicates["most_successful_adds_of_one_pair"] == 1
    assert duplicates["fleet_intact"] is True
    assert duplicates["fleet_direct_rules"] == results["parameters"]["preexisting"]


def test_outcomes_add_up_to_the_requests(wave_run):
    _, _, results, _ = wave_run
    drain, enqueued = results["drain"], results["export"]["enqueued"]
    outcomes = drain["outcomes"]
    assert sum(outcomes.values()) == drain["outcomes_recorded"]
    # Every request has its one outcome, or waits for its unknown device, or is poison.
    assert sum(outcomes.values()) + drain["left_on_queue"] + drain["poisoned"] == enqueued
    assert drain["settled"] is True
    assert drain["left_on_queue"] == drain["expected_unknown_device_requests"] > 0
    assert outcomes.get("ambiguous", 0) > 0  # ... and tied duplicate records
    assert outcomes.get("already-member", 0) > 0  # ... and repeated sends
