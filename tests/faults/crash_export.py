"""A second app instance whose export is killed right before its checkpoint.

``python -m tests.faults.crash_export LEASE_SECONDS PAGE_SIZE``, with the app settings
in the environment (as the Functions host sets them). The process starts a Functions
host of its own (Microsoft's worker library indexes and loads the app here, as in a
new worker process), tunes the runtime its functions use, and runs one tick of
``export_status_messages`` through the worker. The run reads and enqueues everything,
and the process dies with ``os._exit`` the moment the exporter first saves its
watermark: no ``finally`` block, no lease release, no ``atexit``, no answer to the
host, as when the worker is killed. Exits with :data:`KILLED`; 0 if the run returned
without being killed, 1 if it failed (the host's error on stderr).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Final, NoReturn

from devstack.app_runtime import recording_runtime
from devstack.functions_host import REPO, FunctionsHost
from shared.app.overrides import Overrides
from shared.export.watermark_store import WatermarkStore
from shared.platform.settings import load_settings
from shared.platform.storage import StorageAccount

#: The exit status of the simulated kill.
KILLED: Final = 86


def main(argv: list[str]) -> int:
    lease_seconds, page_size = int(argv[0]), int(argv[1])
    with FunctionsHost(REPO) as host:
        settings = load_settings(None)  # the app settings this process's functions use
        watermarks = WatermarkStore(
            StorageAccount(settings).container(settings.state_container),
            lease_seconds=lease_seconds,
        )

        def killed(*args: Any, **kwargs: Any) -> NoReturn:
            os._exit(KILLED)

        watermarks.save_merged = killed  # type: ignore[method-assign]
        # No checkpoint between pages: the first save is the one after every enqueue.
        recording_runtime(
            Overrides(progress_store=watermarks), page_size=page_size, checkpoint_seconds=3600
        )
        invocation = host.call_timer("export_status_messages")
    if not invocation.ok:
        print(f"export_status_messages failed: {invocation.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
