"""The reference points of ``bench/upgrade_wave.py``: the per-device baseline, the bound, and
the raw queue send rate."""

from __future__ import annotations

import inspect
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from azure.storage.queue import QueueClient
from wave_measure import by_route
from wave_workload import SITE

from devstack.stack import LocalStack
from shared.app.runtime import Runtime
from shared.platform.settings import SETTING_FIELDS, load_settings
from shared.queue.sender import RemediationQueue

#: The baseline's own collection (site code + 5 hex digits), empty before it runs.
BASELINE_COLLECTION: Final = f"{SITE}0BA5E"
#: The exporter's sender threads (shared.queue.sender.RemediationQueue's default).
SENDER_WORKERS: Final[int] = inspect.signature(RemediationQueue).parameters["workers"].default


def run_baseline(
    stack: LocalStack,
    names: Sequence[str],
    settings: Mapping[str, str],
    *,
    sample: int,
    seed: int,
) -> dict[str, Any]:
    """Device after device, as the ConfigMgr WebService adds one: find it by name, add
    its direct rule, refresh the collection. Through the production AdminService client
    (built by the runtime from the app's ``settings``), on a collection of its own, with
    the simulator's latency as it is; ``sample`` of the machines ``names``."""
    chosen = random.Random(seed).sample(list(names), min(sample, len(names)))
    stack.adminservice.add_collection(BASELINE_COLLECTION, "Baseline: one device at a time")
    runtime = Runtime(load_settings({k: v for k, v in settings.items() if k in SETTING_FIELDS}))
    try:
        client = runtime.adminservice
        client.token()  # signed in before the clock starts
        before = len(stack.adminservice.calls)
        started = time.perf_counter()
        added = 0
        for name in chosen:
            records = client.find_devices(name)
            if not records:
                continue
            # The WebService takes the last match; the sample has one record each.
            client.add_direct_rule(BASELINE_COLLECTION, records[-1].resource_id, name)
            client.request_refresh(BASELINE_COLLECTION)
            added += 1
        seconds = time.perf_counter() - started
        calls = stack.adminservice.calls[before:]
    finally:
        runtime.close()
    return {
        "devices": added,
        "seconds": seconds,
        "devices_per_second": added / seconds,
        "calls": len(calls),
        "calls_per_device": len(calls) / max(added, 1),
        "by_route": {route: f.calls for route, f in by_route(calls).items()},
        "members_after": len(stack.adminservice.direct_members(BASELINE_COLLECTION)),
    }


def run_raw_queue(stack: LocalStack, count: int) -> dict[str, Any]:
    """``count`` small messages onto a scratch queue straight with the storage SDK, with
    the exporter's sender concurrency: what the queue takes here at most."""
    client = QueueClient.from_connection_string(
        stack.azurite.connection_string, f"wave-raw-{uuid.uuid4().hex[:8]}"
    )
    with client:
        client.create_queue()
        body = "wave-benchmark-" + "x" * 49  # 64 characters

        def send(_: int) -> None:
            client.send_message(body)

        with ThreadPoolExecutor(max_workers=SENDER_WORKERS) as pool:
            started = time.perf_counter()
            list(pool.map(send, range(count)))
            seconds = time.perf_counter() - started
        client.delete_queue()  # nothing of it stays in the emulator for the wave
    return {
        "messages": count,
        "workers": SENDER_WORKERS,
        "seconds": seconds,
        "messages_per_second": count / seconds,
    }


def bounds(results: dict[str, Any], latency_ms: float) -> dict[str, Any]:
    """concurrency / (L x AdminService calls per added device), at host.json's
    concurrency (batchSize + newBatchThreshold) and at the one the worker's thread pool
    allows; and the CPU bound: one core (the functions' Python code holds the GIL) /
    the functions' CPU per added device. None without latency or without an added
    device."""
    drain = results["drain"]
    concurrency = drain["batch_size"] + drain["new_batch_threshold"]
    threads = drain["worker_threads"] or concurrency
    per_added = results["adminservice"]["calls_per_added_device"] if drain["added"] else None
    latency = latency_ms / 1000
    cpu_ms = drain["app_cpu_ms_per_added_device"] if drain["added"] else None

    def bound(parallel: int) -> float | None:
        return parallel / (latency * per_added) if latency > 0 and per_added else None

    return {
        "concurrency": concurrency,
        "worker_threads": threads,
        "effective_concurrency": min(concurrency, threads),
        "latency_seconds": latency,
        "calls_per_added_device": per_added,
        "devices_per_second": bound(concurrency),
        "devices_per_second_at_worker_threads": bound(min(concurrency, threads)),
        "app_cpu_ms_per_added_device": cpu_ms,
        "cpu_devices_per_second": 1000 / cpu_ms if cpu_ms else None,
    }
