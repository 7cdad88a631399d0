"""The remediation-wave benchmark: one Microsoft 365 upgrade wave, end to end, on the
local stack, against a per-device baseline and a bound.

Usage: .venv/bin/python bench/upgrade_wave.py [--messages 1000|10000|100000] [--latency-ms 50]
    [--identity sitedb|adminservice] [--out bench/results]

1. Generates the wave (``bench/wave_workload.py``): N status messages (default 10,000)
   from N/2 devices, the shipped rules, repeats, near-misses, unknown and duplicate
   devices, and 20,000 other devices already in the first rule's collection.
2. Export: one tick of the export timer through Microsoft's Python worker library (a
   FunctionsHost). Wall time, status messages read per second, the SQL statements the
   site database received (its server log), peak resident memory.
3. Drain: the queue through the host's listener (host.json batchSize +
   newBatchThreshold in flight) against the AdminService simulator with L ms added to
   every answer. Devices added per second, requests per second, AdminService calls and
   response bytes per added device by route, token requests, time from the start of
   the wave to each membership (p50/p95), the outcome mix, failures and poison, and
   the direct rules per added device (must be 1).
4. Baseline: the ConfigMgr WebService's way, device after device (lookup,
   AddMembershipRule, RequestRefresh) through the same simulator and latency.
5. Bound: concurrency / (L x AdminService calls per added device). And the raw queue
   (measured first, on the fresh storage emulator): N small messages sent with the
   exporter's sender concurrency straight with the SDK, beside the export's rate.

Prints a table and writes ``<out>/<UTC timestamp>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from azure.storage.queue import QueueClient
from wave_measure import (
    CpuUse,
    Drain,
    RssSampler,
    StatementLog,
    by_route,
    peak_rss_bytes,
    percentile,
    rates_by_quarter,
)
from wave_references import BASELINE_COLLECTION, bounds, run_baseline, run_raw_queue
from wave_report import print_table, write_chart, write_json
from wave_workload import Wave, build_wave

from devstack.app_runtime import HOST_SETTINGS, app_settings, recording_runtime, succeeded
from devstack.demo import functions_host
from devstack.functions_host import REPO, FunctionsHost
from devstack.queue_host import QueueTriggerListener
from devstack.stack import LocalStack
from devstack.tls import LocalCA
from shared.app.runtime import quiet_sdk_logs, reset_runtime
from shared.platform.storage import approximate_depth

DEFAULT_OUT: Final = REPO / "bench" / "results"
EXPORT_FUNCTION: Final = "export_status_messages"
QUEUE_FUNCTION: Final = "apply_remediation"
#: How long the drain waits for requests put back for a moment (another delivery was
#: adding the same device to the same collection: back after 30 s).
STRAGGLER_TIMEOUT: Final = 120.0
#: drain() calls the first pass makes when the listener's storage calls fail.
DRAIN_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class WaveOptions:
    """The command line."""

    messages: int = 10_000
    latency_ms: float = 50.0
    identity: str = "sitedb"
    out: Path = DEFAULT_OUT
    seed: int = 13
    baseline_sample: int = 100
    preexisting: int = 20_000
    max_adds: int = 20_000
    threads: int | None = None


@dataclass
class WaveRun:
    """What a run produced."""

    results: dict[str, Any]
    json_path: Path
    png_path: Path
    lines: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> WaveOptions:
    """The options from the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/upgrade_wave.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=10_000, help="status messages (N)")
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="added to every AdminService answer"
    )
    parser.add_argument("--identity", choices=("sitedb", "adminservice"), default="sitedb")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the results")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--baseline-sample", type=int, default=100, help="devices the baseline adds one by one"
    )
    parser.add_argument(
        "--preexisting",
        type=int,
        default=20_000,
        help="direct rules already in the first rule's collection",
    )
    parser.add_argument(
        "--max-adds",
        type=int,
        default=20_000,
        help="MAX_ADDS_PER_COLLECTION_PER_HOUR for the run (default: its maximum)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="PYTHON_THREADPOOL_THREAD_COUNT of the worker (default: as infra sets it, one "
        "thread per invocation host.json runs at once)",
    )
    args = parser.parse_args(argv)
    if not 100 <= args.messages <= 1_000_000:
        parser.error("--messages must be 100 to 1,000,000 (EXPORT_MAX_MESSAGES_PER_RUN's range)")
    if not 1 <= args.max_adds <= 20_000:
        parser.error("--max-adds must be 1 to 20,000 (MAX_ADDS_PER_COLLECTION_PER_HOUR's range)")
    if args.latency_ms < 0 or args.baseline_sample < 1 or args.preexisting < 0:
        parser.error("--latency-ms and --preexisting must not be negative, --baseline-sample >= 1")
    return WaveOptions(
        messages=args.messages,
        latency_ms=args.latency_ms,
        identity=args.identity,
        out=args.out,
        seed=args.seed,
        baseline_sample=args.baseline_sample,
        preexisting=args.preexisting,
        max_adds=args.max_adds,
        threads=args.threads,
    )


def app_values(stack: LocalStack, options: WaveOptions) -> dict[str, str]:
    """The function app's settings for the run."""
    values = {
        **stack.settings_values(),
        **HOST_SETTINGS,
        "IDENTITY_SOURCE": options.identity,
        # The blast-radius guard would hold a wave: the benchmark raises it (see README).
        "MAX_ADDS_PER_COLLECTION_PER_HOUR": str(options.max_adds),
        # One tick reads the whole wave (the default 50,000 leaves the rest for the next).
        "EXPORT_MAX_MESSAGES_PER_RUN": str(max(50_000, options.messages)),
    }
    if options.threads:
        values["PYTHON_THREADPOOL_THREAD_COUNT"] = str(options.threads)
    return values


def load_wave(stack: LocalStack, options: WaveOptions) -> tuple[Wave, float]:
    """Generate the wave and load it, the fleet and its collection; seconds it took."""
    started = time.perf_counter()
    wave = build_wave(
        options.messages,
        seed=options.seed,
        now=datetime.now(UTC).replace(tzinfo=None),
        preexisting=options.preexisting,
    )
    stack.load(wave.workload)
    stack.site_db.insert_devices(wave.fleet)
    for device in wave.fleet:
        stack.adminservice.add_device(device)
    stack.adminservice.set_direct_members(
        wave.fleet_collection, [d.resource_id for d in wave.fleet]
    )
    return wave, time.perf_counter() - started


def run_pipeline(
    stack: LocalStack, functions: FunctionsHost, wave: Wave, options: WaveOptions
) -> dict[str, Any]:
    """Export (one timer tick) and drain (the queue listener), measured."""
    runtime, exports = recording_runtime()  # the very runtime the functions use
    sql = StatementLog(stack.site_db.log_path)
    tokens_before = stack.entra.token_count
    export_mark = sql.mark()
    wave_started = datetime.now(UTC)  # the messages are in the site database
    with RssSampler() as export_rss, CpuUse(stack.azurite.pid) as export_cpu:
        tick = succeeded(functions.call_timer(EXPORT_FUNCTION))
    exported = exports.reports[-1]
    drain_mark = sql.mark()

    stack.adminservice.set_latency(options.latency_ms / 1000)  # every route
    calls_before = len(stack.adminservice.calls)
    with (
        QueueTriggerListener(functions, QUEUE_FUNCTION) as listener,
        RssSampler() as drain_rss,
        CpuUse(stack.azurite.pid, app_threads=functions.worker_threads) as drain_cpu,
    ):
        queue_options = listener.options
        drain = Drain(listener)
        started = time.perf_counter()
        for _ in range(DRAIN_ATTEMPTS):
            if drain.once():
                break
        first_pass = time.perf_counter() - started
        first_pass_end = datetime.now(UTC)
        # Back on the queue beyond the unknown devices' requests: put back for a moment
        # (the device was being added by another delivery) or failed, to be retried.
        retrying = max(0, listener.depth() - wave.expected_waiting)
        deadline = time.monotonic() + STRAGGLER_TIMEOUT
        while listener.depth() > wave.expected_waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            drain.once()
        report = drain.report
        settled = time.perf_counter() - started
        waiting = listener.depth()
        poison = QueueClient.from_connection_string(
            stack.azurite.connection_string, f"{listener.queue_name}-poison"
        )
        with poison:
            poison_depth = approximate_depth(poison)
    drain_sql = sql.count(drain_mark)
    calls = stack.adminservice.calls[calls_before:]
    tokens = stack.entra.token_count - tokens_before
    outcomes = runtime.audit.query()
    added = [o for o in outcomes if o.kind == "added"]
    latencies = [(o.recorded_utc - wave_started).total_seconds() for o in added]
    added_in_pass = sum(1 for o in added if o.recorded_utc <= first_pass_end)
    routes = by_route(calls)
    per_added = max(len(added), 1)
    rule_counts = {
        rule.collection_id: stack.adminservice.direct_rule_counts(rule.collection_id)
        for rule in runtime.rules.rules
    }
    rules_per_added = Counter(
        rule_counts[str(o.collection_id)][int(o.resource_id or 0)] for o in added
    )
    fleet_counts = rule_counts.get(wave.fleet_collection, Counter())
    fleet_ids = [d.resource_id for d in wave.fleet]
    return {
        "export": {
            "seconds": tick.seconds,
            "status_messages_read": exported.read,
            "matched": sum(s.matched for s in exported.sites.values()),
            "enqueued": exported.enqueued,
            "expected_requests": wave.expected_requests,
            "rows_per_second": exported.read / tick.seconds,
            "enqueued_per_second": exported.enqueued / tick.seconds,
            "sql": sql.count(export_mark, drain_mark).as_dict(),
            "peak_rss_mib": export_rss.peak_mib,
            "cpu": export_cpu.figures,
        },
        "drain": {
            "seconds": first_pass,
            "seconds_until_settled": settled,
            "invocations": len(report.invocations),
            "requests_per_second": len(report.invocations) / first_pass,
            "added": len(added),
            "added_in_first_pass": added_in_pass,
            "devices_added_per_second": added_in_pass / first_pass,
            "distinct_devices_added": len({o.resource_id for o in added}),
            "distinct_devices_per_second": len(
                {o.resource_id for o in added if o.recorded_utc <= first_pass_end}
            )
            / first_pass,
            "max_in_flight": report.max_in_flight,
            # Request to response as the host saw it (waiting for a worker thread included).
            "invocation_seconds_p50": percentile([i.seconds for i in report.invocations], 0.5),
            "invocation_seconds_p95": percentile([i.seconds for i in report.invocations], 0.95),
            "batch_size": queue_options.batch_size,
            "new_batch_threshold": queue_options.new_batch_threshold,
            "failed_invocations": report.failed,
            "poisoned": report.poisoned,
            "poison_queue_depth": poison_depth,
            "retrying_after_first_pass": retrying,
            "left_on_queue": waiting,
            "expected_unknown_device_requests": wave.expected_waiting,
            "settled": waiting <= wave.expected_waiting,
            "outcomes": dict(Counter(o.kind for o in outcomes).most_common()),
            "outcomes_recorded": len(outcomes),
            "membership_seconds_p50": percentile(latencies, 0.5),
            "membership_seconds_p95": percentile(latencies, 0.95),
            "membership_seconds_max": max(latencies, default=None),
            "token_requests": tokens,
            "sql": drain_sql.as_dict(),
            "sql_statements_per_request": drain_sql.app_total / max(len(report.invocations), 1),
            "peak_rss_mib": drain_rss.peak_mib,
            "cpu": drain_cpu.figures,
            # What the functions themselves spent (the worker's pool threads): an
            # instance's own CPU on Azure, without the simulators and the host's listener.
            "app_cpu_ms_per_request": 1000
            * (drain_cpu.figures["app_cpu_seconds"] or 0.0)
            / max(len(report.invocations), 1),
            "app_cpu_ms_per_added_device": 1000
            * (drain_cpu.figures["app_cpu_seconds"] or 0.0)
            / per_added,
            "worker_threads": functions.worker_thread_limit(),
            "requests_per_second_by_quarter": rates_by_quarter(drain.done, started),
            "listener_storage_errors": dict(drain.errors.most_common()),
            "failures": dict(
                Counter((i.error or "")[:300] for i in report.invocations if not i.ok).most_common()
            ),
        },
        "adminservice": {
            "calls": len(calls),
            "response_bytes": sum(c.response_bytes for c in calls),
            "calls_per_added_device": len(calls) / per_added,
            "response_bytes_per_added_device": sum(c.response_bytes for c in calls) / per_added,
            "by_route": {
                route: {
                    **asdict(figures),
                    "per_added_device": figures.calls / per_added,
                    "response_bytes_per_added_device": figures.response_bytes / per_added,
                }
                for route, figures in routes.items()
            },
        },
        "duplicates": {
            "direct_rules_per_added_device": {
                str(k): v for k, v in sorted(rules_per_added.items())
            },
            "every_added_device_has_one_rule": set(rules_per_added) <= {1},
            "most_successful_adds_of_one_pair": max(
                stack.adminservice.successful_adds().values(), default=0
            ),
            "fleet_direct_rules": sum(fleet_counts[r] for r in fleet_ids),
            "fleet_intact": all(fleet_counts[r] == 1 for r in fleet_ids),
        },
        "wave_started_utc": wave_started.isoformat(),
    }


def run_wave(
    options: WaveOptions,
    *,
    ca: LocalCA | None = None,
    host: FunctionsHost | None = None,
    echo: Callable[[str], None] = print,
) -> WaveRun:
    """The whole benchmark. ``ca`` and ``host``: the caller's (a test session's), since
    a process runs one Functions host and one user realm responder per CA."""
    quiet_sdk_logs()
    started = datetime.now(UTC)
    stack = LocalStack(ca=ca)
    stack.site_db.log_statements = True  # the SQL statements are counted in its log
    echo(f"starting the local stack; wave of {options.messages:,} status messages")
    with stack:
        wave, load_seconds = load_wave(stack, options)
        echo(f"loaded in {load_seconds:.1f}s; raw queue: {options.messages:,} messages")
        # Before the wave, on a fresh storage emulator, as the export finds it.
        raw_queue = run_raw_queue(stack, options.messages)
        echo("export and drain through the worker")
        with app_settings(app_values(stack, options)), functions_host(host) as functions:
            reset_runtime()
            try:
                results = run_pipeline(stack, functions, wave, options)
            finally:
                reset_runtime()
        echo(f"baseline: {min(options.baseline_sample, len(wave.clean_names))} devices")
        results["baseline"] = run_baseline(
            stack,
            wave.clean_names,
            app_values(stack, options),
            sample=options.baseline_sample,
            seed=options.seed,
        )
        results["raw_queue"] = raw_queue
    results["bound"] = bounds(results, options.latency_ms)
    results["raw_queue"]["export_enqueue_share"] = (
        results["export"]["enqueued_per_second"] / results["raw_queue"]["messages_per_second"]
    )
    results["parameters"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "devices": wave.devices,
        "discovery_records": len(wave.workload.devices),
        "reimaged_devices": wave.reimaged,
        "tied_devices": wave.ties,
        "unknown_machines": wave.unknown_machines,
        "message_mix": wave.message_mix,
        "fleet_collection": wave.fleet_collection,
        "baseline_collection": BASELINE_COLLECTION,
        "load_seconds": load_seconds,
        "started_utc": started.isoformat(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    results["process_peak_rss_mib"] = peak_rss_bytes() / 2**20
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = write_json(results, options.out / f"{stamp}.json")
    png_path = write_chart(results, options.out / f"{stamp}.png")
    lines = print_table(results, echo=echo)
    echo(f"results: {json_path}\nchart:   {png_path}")
    return WaveRun(results, json_path, png_path, lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    options = parse_args(argv)
    # The table reports every outcome and failure; the app's per-message log lines
    # (an ambiguous device is a warning) would bury it.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run_wave(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
