"""An export run in a process of its own that is killed right before its checkpoint.

``python -m tests.faults.crash_export LEASE_SECONDS PAGE_SIZE``, with the app settings
in the environment (as the Functions host sets them). The run reads and enqueues
everything, and the process dies with ``os._exit`` the moment the exporter first
saves its watermark: no ``finally`` block, no lease release, no ``atexit``, as when
the worker is killed. Exits with :data:`KILLED`, or 0 if it was never killed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any, Final, NoReturn

from shared.export import Exporter
from shared.runtime import Runtime
from shared.watermark import WatermarkStore

#: The exit status of the simulated kill.
KILLED: Final = 86


def main(argv: list[str]) -> int:
    lease_seconds, page_size = int(argv[0]), int(argv[1])
    runtime = Runtime.from_environment()
    watermarks = WatermarkStore(
        runtime.storage.container(runtime.settings.state_container), lease_seconds=lease_seconds
    )

    def killed(*args: Any, **kwargs: Any) -> NoReturn:
        os._exit(KILLED)

    watermarks.save_merged = killed  # type: ignore[method-assign]
    exporter = Exporter(
        database=runtime.site_database,
        queue=runtime.queue,
        watermarks=watermarks,
        rules=runtime.rules,
        # No checkpoint between pages: the first save is the one after every enqueue.
        options=replace(runtime.export_options(), page_size=page_size, checkpoint_seconds=3600),
    )
    exporter.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
