"""Export throughput and memory on the local stack.

Usage: .venv/bin/python bench/export_throughput.py [--messages N] [--page-size N]

Generates N status messages over two sites, runs one export and a second (nothing
new), and prints messages read per second, queue messages sent per second, the size of
the saved state and the peak memory of this process.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid
from dataclasses import replace

from devstack.datagen import generate_workload
from devstack.stack import LocalStack
from shared.export import Exporter
from shared.runtime import Runtime, quiet_sdk_logs
from shared.settings import load_settings


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=1000)
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
            database=runtime.site_database,
            queue=runtime.queue,
            watermarks=runtime.watermarks,
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
    print(f"peak RSS of this process  : {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
