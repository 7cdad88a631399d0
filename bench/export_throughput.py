"""Export throughput and memory on the local stack.

Usage: .venv/bin/python bench/export_throughput.py [--messages N] [--page-size N] [--no-worker]

Generates N status messages over two sites, runs one export and a second (nothing
new), and prints messages read per second, queue messages sent per second, the size of
the saved state and the peak memory of this process. Then (unless --no-worker) the
same export again, onto a queue of its own, as Azure runs it: one tick of the export
timer through Microsoft's Python worker library (a FunctionsHost), and the figure the
host would log for that invocation.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from dataclasses import replace

from devstack.app_runtime import HOST_SETTINGS, app_settings, recording_runtime, succeeded
from devstack.datagen import generate_workload
from devstack.functions_host import REPO, FunctionsHost
from devstack.stack import LocalStack
from shared.app.runtime import Runtime, quiet_sdk_logs, reset_runtime
from shared.export.exporter import Exporter, ExportReport
from shared.platform.settings import load_settings


def through_worker(stack: LocalStack, page_size: int) -> tuple[ExportReport, float, float]:
    """One export timer tick through the worker, onto a fresh queue (so a fresh
    watermark): its report, the invocation's seconds as the host saw them, and the
    seconds of a second tick (nothing new)."""
    queue = f"benchw{uuid.uuid4().hex[:8]}"
    settings = {**stack.settings_values(), **HOST_SETTINGS, "REMEDIATION_QUEUE": queue}
    with app_settings(settings), FunctionsHost(REPO) as host:
        reset_runtime()
        try:
            _, exports = recording_runtime(page_size=page_size)  # the timer function's
            first = succeeded(host.call_timer("export_status_messages"))
            second = succeeded(host.call_timer("export_status_messages"))
            return exports.reports[0], first.seconds, second.seconds
        finally:
            reset_runtime()


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument(
        "--worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export through the worker, as Azure runs the timer (default: yes)",
    )
    args = parser.parse_args()
    quiet_sdk_logs()

    with LocalStack() as stack:
        workload = generate_workload(seed=7, sites=("PS1", "PS2"), message_count=args.messages)
        started = time.perf_counter()
        stack.site_db.load_workload(workload)
        load_seconds = time.perf_counter() - started

        queue = f"bench{uuid.uuid4().hex[:8]}"
        runtime = Runtime(load_settings(stack.settings_values(REMEDIATION_QUEUE=queue)))
        exporter = Exporter(
            status_source=runtime.status_source,
            request_sender=runtime.request_sender,
            progress_store=runtime.progress_store,
            rules=runtime.rules,
            options=replace(runtime.export_options(), page_size=args.page_size),
        )

        started = time.perf_counter()
        report = exporter.run()
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = exporter.run()
        second = time.perf_counter() - started
        states = {
            site: len(state.model_dump_json()) if state else 0
            for site in report.sites
            for state, _ in [runtime.watermarks.load(site)]
        }
        runtime.close()
        worker = through_worker(stack, args.page_size) if args.worker else None

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"status messages generated : {len(workload.messages)} (load {load_seconds:.2f}s)")
    print(
        f"first run                 : read {report.read} 39997 messages, "
        f"enqueued {report.enqueued} in {first:.2f}s"
    )
    print(f"  read rate               : {report.read / first:,.0f} status messages/s")
    print(f"  enqueue rate            : {report.enqueued / first:,.0f} queue messages/s")
    print(f"second run (nothing new)  : enqueued {again.enqueued} in {second:.2f}s")
    print(f"saved state per site      : {', '.join(f'{k} {v:,} bytes' for k, v in states.items())}")
    if worker is not None:
        timed, seconds, again_seconds = worker
        print(
            f"through the worker        : timer tick read {timed.read}, enqueued "
            f"{timed.enqueued} in {seconds:.2f}s ({timed.read / seconds:,.0f} status "
            f"messages/s, {timed.enqueued / seconds:,.0f} queue messages/s)"
        )
        print(f"  second tick (nothing new): {again_seconds:.2f}s")
    print(f"peak RSS of this process  : {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
