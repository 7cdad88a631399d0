"""One instance of the function app in a process of its own.

It indexes the app with Microsoft's worker library (a :class:`FunctionsHost`), feeds
``apply_remediation`` from the remediation queue as the host's queue listener does
(host.json's batch size and threshold, the worker's thread pool), and keeps going until
the queue holds nothing, not even a message waiting out its visibility timeout. Then it
prints what it did as one JSON line. Start two at once and they are two instances of a
scaled-out app draining one queue.

Usage: ``python -m devstack.instance [--timeout SECONDS] [--wait-for-messages]``, with
the app settings in the environment (as the host passes them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace

from devstack.functions_host import REPO, FunctionsHost
from devstack.queue_host import QueueTriggerListener
from shared.queue.options import QueueOptions


def main(argv: Sequence[str] | None = None) -> int:
    """Drain the remediation queue once, as one more instance; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this")
    parser.add_argument(
        "--wait-for-messages",
        action="store_true",
        help="start only once the queue holds a message (so instances start together)",
    )
    args = parser.parse_args(argv)
    # A failed delivery is visible again at once, so retries do not wait out the test.
    options = replace(QueueOptions.from_host_json(REPO), visibility_timeout_seconds=0)
    with (
        FunctionsHost(REPO) as host,
        QueueTriggerListener(host, "apply_remediation", options=options) as listener,
    ):
        if args.wait_for_messages:
            listener.wait_for_messages(timeout=args.timeout)
        report = listener.drain_until_empty(timeout=args.timeout)
    figures = {
        "succeeded": report.succeeded,
        "failed": report.failed,
        "poisoned": report.poisoned,
        "max_in_flight": report.max_in_flight,
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
