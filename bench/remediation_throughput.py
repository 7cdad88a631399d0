"""Remediation throughput on the local stack, as Azure would see it: the export timer
and the queue function run through Microsoft's Python worker library (a FunctionsHost),
the queue fed by the host's listener with host.json's batch settings, against the
Entra ID and AdminService simulators.

Usage: .venv/bin/python bench/remediation_throughput.py [--messages N]

Prints requests handled per second, how many ran at once, the invocation times the
host saw, the outcome mix, AdminService calls per request, token requests, and the
peak memory of this process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections import Counter

from devstack.app_runtime import HOST_SETTINGS, app_settings, recording_runtime, succeeded
from devstack.datagen import generate_workload
from devstack.functions_host import REPO, FunctionsHost
from devstack.queue_host import QueueTriggerListener
from devstack.stack import LocalStack
from shared.app.runtime import quiet_sdk_logs, reset_runtime


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    quiet_sdk_logs()

    with LocalStack() as stack:
        workload = generate_workload(
            seed=11, sites=("PS1", "PS2"), message_count=args.messages, devices_per_site=200
        )
        stack.load(workload)
        with (
            app_settings({**stack.settings_values(), **HOST_SETTINGS}),
            FunctionsHost(REPO) as host,
        ):
            reset_runtime()
            try:
                runtime, exports = recording_runtime()  # the runtime the functions use
                succeeded(host.call_timer("export_status_messages"))
                exported = exports.reports[-1]
                with QueueTriggerListener(host, "apply_remediation") as listener:
                    options = listener.options
                    started = time.perf_counter()
                    report = listener.drain()
                    seconds = time.perf_counter() - started
                    waiting = listener.depth()
                outcomes = Counter(o.kind for o in runtime.audit.query())
            finally:
                reset_runtime()
        calls = len(stack.adminservice.calls)
        tokens = stack.entra.token_count

    handled = len(report.invocations)
    # The worker's thread pool: PYTHON_THREADPOOL_THREAD_COUNT, else Python's default.
    threads = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT") or str(
        min(32, (os.cpu_count() or 1) + 4)
    )
    times = sorted(i.seconds for i in report.invocations) or [0.0]
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"status messages           : {len(workload.messages)}, enqueued {exported.enqueued}")
    print(
        f"requests handled          : {handled} in {seconds:.2f}s ({handled / seconds:,.1f}/s "
        f"through the worker, up to {report.max_in_flight} at once; host.json batchSize "
        f"{options.batch_size} + newBatchThreshold {options.new_batch_threshold})"
    )
    print(
        f"invocation time           : median {statistics.median(times) * 1000:,.0f} ms, "
        f"p95 {p95 * 1000:,.0f} ms, max {times[-1] * 1000:,.0f} ms (request to response, "
        f"waiting for one of the worker's {threads} threads included)"
    )
    print(
        f"outcomes                  : {dict(outcomes.most_common())}, failed {report.failed}, "
        f"poisoned {report.poisoned}, left on the queue {waiting}"
    )
    print(f"AdminService calls        : {calls} ({calls / max(handled, 1):.2f} per request)")
    print(f"token requests            : {tokens}")
    print(f"peak RSS of this process  : {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
