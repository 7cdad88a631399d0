"""A second app instance whose export timer fires while the first one's runs.

``python -m tests.faults.overlap_export PAGE_SIZE``, with the app settings in the
environment. The process starts a Functions host of its own (Microsoft's worker library
indexes and loads the app here), tunes the runtime its functions use, prints
:data:`READY` and waits for a line on stdin: the moment to run one tick of
``export_status_messages`` through the worker. It then prints one JSON line:
``{"ok": ..., "error": ..., "sites": {site: {"enqueued", "busy", "complete"}}}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from devstack.app_runtime import recording_runtime
from devstack.functions_host import REPO, FunctionsHost
from tests.faults.instance import report_summary

#: What the child prints once its host is up and its runtime tuned.
READY: Final = "ready"


def main(argv: list[str]) -> int:
    page_size = int(argv[0])
    with FunctionsHost(REPO) as host:
        # The runtime this process's functions use.
        _, exporter = recording_runtime(page_size=page_size)
        print(READY, flush=True)
        sys.stdin.readline()  # the test says go
        invocation = host.call_timer("export_status_messages")
    result: dict[str, Any] = {"ok": invocation.ok, "error": invocation.error, "sites": {}}
    if invocation.ok:
        result["sites"] = report_summary(exporter.reports[-1])
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
