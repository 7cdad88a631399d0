"""Remediation throughput on the local stack: export, then drain the queue through the
queue function's handler against the Entra ID and AdminService simulators.

Usage: .venv/bin/python bench/remediation_throughput.py [--messages N]

Prints requests handled per second, the outcome mix, AdminService calls per request,
token requests, and the peak memory of this process.
"""

from __future__ import annotations

import argparse
import resource
import time

from devstack.datagen import generate_workload
from devstack.stack import LocalStack
from shared.runtime import Runtime, quiet_sdk_logs
from shared.settings import load_settings


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
        runtime = Runtime(load_settings(stack.settings_values()))
        try:
            exported = runtime.exporter.run()
            started = time.perf_counter()
            report = runtime.processor.drain()
            seconds = time.perf_counter() - started
        finally:
            runtime.close()
        calls = len(stack.adminservice.calls)
        tokens = stack.entra.token_count

    handled = report.processed + report.failed
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"status messages           : {len(workload.messages)}, enqueued {exported.enqueued}")
    print(
        f"requests handled          : {handled} in {seconds:.2f}s "
        f"({handled / seconds:,.1f}/s, one worker)"
    )
    print(
        f"outcomes                  : {dict(report.outcomes.most_common())}, failed {report.failed}"
    )
    print(f"AdminService calls        : {calls} ({calls / max(handled, 1):.2f} per request)")
    print(f"token requests            : {tokens}")
    print(f"peak RSS of this process  : {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
