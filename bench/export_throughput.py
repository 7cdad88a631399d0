"""Export throughput and memory on the local stack.

Usage: .venv/bin/python bench/export_throughput.py [--messages N] [--page-size N]
    [--source sitedb|adminservice] [--latency-ms N] [--no-worker] [--no-alone]

Generates N status messages over two sites, runs one export and a second (nothing
new), and prints messages read per second, queue messages sent per second, the size of
the saved state and the peak memory of this process. With ``--source adminservice``
the export reads through the AdminService simulator (``--latency-ms`` added to every
answer, as a cloud management gateway adds it) and the figures include the
AdminService requests and response bytes per 1,000 exported status messages. Then
(unless --no-worker) the same export again, onto a queue of its own, as Azure runs it:
one tick of the export timer through Microsoft's Python worker library (a
FunctionsHost), and the figure the host would log for that invocation. And (unless
--no-alone) once more in a process of its own, onto a fresh queue, whose peak resident
memory is the export's alone: this process holds the generated workload, the child
only what the exporter holds (pages are streamed, so it must not grow with N).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import requests

from devstack.app_runtime import HOST_SETTINGS, app_settings, recording_runtime, succeeded
from devstack.datagen import generate_workload
from devstack.functions_host import REPO, FunctionsHost
from devstack.stack import LocalStack
from shared.app.overrides import Overrides
from shared.app.runtime import Runtime, quiet_sdk_logs, reset_runtime
from shared.export.exporter import Exporter, ExportReport
from shared.platform.http import new_session
from shared.platform.settings import load_settings


class Traffic:
    """Counts the requests to one base URL and the bytes of their answers."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.requests = 0
        self.bytes = 0

    def session(self, verify: Path) -> requests.Session:
        """``new_session``, with a hook that counts (an ``Overrides.http`` factory)."""
        session = new_session(verify)

        def count(response: requests.Response, *args: object, **kwargs: object) -> None:
            if response.url.startswith(self.base_url):
                self.requests += 1
                self.bytes += len(response.content)

        session.hooks["response"].append(count)
        return session


def through_worker(
    stack: LocalStack, page_size: int, source: str
) -> tuple[ExportReport, float, float]:
    """One export timer tick through the worker, onto a fresh queue (so a fresh
    watermark): its report, the invocation's seconds as the host saw them, and the
    seconds of a second tick (nothing new)."""
    queue = f"benchw{uuid.uuid4().hex[:8]}"
    settings = {
        **stack.settings_values(export_source=source),
        **HOST_SETTINGS,
        "REMEDIATION_QUEUE": queue,
    }
    with app_settings(settings), FunctionsHost(REPO) as host:
        reset_runtime()
        try:
            _, exports = recording_runtime(page_size=page_size)  # the timer function's
            first = succeeded(host.call_timer("export_status_messages"))
            second = succeeded(host.call_timer("export_status_messages"))
            return exports.reports[0], first.seconds, second.seconds
        finally:
            reset_runtime()


def export_alone(values: dict[str, str], page_size: int) -> dict[str, float]:
    """One export in a child process (the app settings in its environment, as the host
    passes them): what it read and sent, its seconds and its peak RSS."""
    child = subprocess.run(
        [sys.executable, __file__, "--child-export", "--page-size", str(page_size)],
        env={**os.environ, **values},
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=3600,
    )
    if child.returncode != 0:
        raise SystemExit(f"the export in a process of its own failed:\n{child.stderr}")
    figures: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


def child_export(page_size: int) -> None:
    """The child of :func:`export_alone`: one export, its figures as one JSON line."""
    quiet_sdk_logs()
    runtime = Runtime(load_settings())
    exporter = Exporter(
        status_source=runtime.status_source,
        request_sender=runtime.request_sender,
        progress_store=runtime.progress_store,
        rules=runtime.rules,
        options=replace(runtime.export_options(), page_size=page_size),
    )
    started = time.perf_counter()
    report = exporter.run()
    seconds = time.perf_counter() - started
    runtime.close()
    figures = {"read": report.read, "enqueued": report.enqueued, "seconds": seconds}
    print(json.dumps({**figures, "peak_rss_mib": _own_peak_rss_mib()}))


def _own_peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM, Linux): ru_maxrss would not do in a child,
    since Linux keeps the parent's across the exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--source", choices=("sitedb", "adminservice"), default="sitedb")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added to every AdminService answer"
    )
    parser.add_argument(
        "--worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export through the worker, as Azure runs the timer (default: yes)",
    )
    parser.add_argument(
        "--alone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export in a process of its own, for its peak memory (default: yes)",
    )
    parser.add_argument("--child-export", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export:
        child_export(args.page_size)
        return
    quiet_sdk_logs()
    # One run reads them all (the default cap, 50,000, leaves the rest for the next).
    per_run = str(max(50_000, args.messages))

    with LocalStack() as stack:
        workload = generate_workload(seed=7, sites=("PS1", "PS2"), message_count=args.messages)
        started = time.perf_counter()
        stack.site_db.load_workload(workload)
        load_seconds = time.perf_counter() - started

        stack.adminservice.latency_seconds = args.latency_ms / 1000
        queue = f"bench{uuid.uuid4().hex[:8]}"
        traffic = Traffic(stack.adminservice.cmg_url)
        runtime = Runtime(
            load_settings(
                stack.settings_values(
                    export_source=args.source,
                    REMEDIATION_QUEUE=queue,
                    EXPORT_MAX_MESSAGES_PER_RUN=per_run,
                )
            ),
            overrides=Overrides(http=traffic.session),
        )
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
        first_requests, first_bytes = traffic.requests, traffic.bytes
        started = time.perf_counter()
        again = exporter.run()
        second = time.perf_counter() - started
        states = {
            site: len(state.model_dump_json()) if state else 0
            for site in report.sites
            for state, _ in [runtime.watermarks.load(site)]
        }
        runtime.close()
        worker = through_worker(stack, args.page_size, args.source) if args.worker else None
        alone = (
            export_alone(
                stack.settings_values(
                    export_source=args.source,
                    REMEDIATION_QUEUE=f"benchc{uuid.uuid4().hex[:8]}",
                    EXPORT_MAX_MESSAGES_PER_RUN=per_run,
                ),
                args.page_size,
            )
            if args.alone
            else None
        )

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"status messages generated : {len(workload.messages)} (load {load_seconds:.2f}s)")
    print(
        f"first run                 : read {report.read} 39997 messages, "
        f"enqueued {report.enqueued} in {first:.2f}s"
    )
    print(f"  read rate               : {report.read / first:,.0f} status messages/s")
    print(f"  enqueue rate            : {report.enqueued / first:,.0f} queue messages/s")
    if args.source == "adminservice":
        per = 1000 / max(report.read, 1)
        print(
            f"  AdminService            : {first_requests} requests, {first_bytes:,} response "
            f"bytes ({first_requests * per:.1f} requests and {first_bytes * per / 1024:,.0f} "
            f"KiB per 1,000 status messages read; {args.latency_ms:g} ms added per answer)"
        )
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
    if alone is not None:
        print(
            f"in a process of its own   : read {alone['read']:,.0f}, enqueued "
            f"{alone['enqueued']:,.0f} in {alone['seconds']:.2f}s "
            f"({alone['enqueued'] / alone['seconds']:,.0f} queue messages/s); peak RSS "
            f"{alone['peak_rss_mib']:,.0f} MiB"
        )
    print(f"peak RSS of this process  : {peak_mib:,.0f} MiB (the generated workload included)")


if __name__ == "__main__":
    main()
