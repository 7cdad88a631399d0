"""An app instance as the fault suite runs it: the functions run by Microsoft's worker
library (``devstack.functions_host``), the process runtime they use tuned for the
scenario before the first invocation.

The timer function calls ``get_runtime().exporter.run()``; a scenario replaces that
cached exporter with a :class:`RecordingExporter` built on the same runtime's clients
(smaller pages, a hooked site database client, a shorter lease), so the export still
runs only because the worker invoked ``export_status_messages``. The recorder keeps
each run's report, which the function itself does not return.

Used in the pytest process (with the session's host) and in the child processes that
model a second instance (``crash_export``, ``overlap_export``), each with a host of
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shared.export import Exporter, ExportReport
from shared.runtime import Runtime
from shared.site_database import SiteDatabaseClient
from shared.watermark import WatermarkStore

ExportProgress = Callable[[ExportReport], None]


class RecordingExporter(Exporter):
    """The runtime's exporter with a progress hook for the next run and a record of
    every run that returned."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Called between pages of the next run only (a fault lands mid-export).
        self.progress: ExportProgress | None = None
        #: The report of every run that returned, oldest first.
        self.reports: list[ExportReport] = []

    def run(self, *, dry_run: bool = False, progress: ExportProgress | None = None) -> ExportReport:
        hook, self.progress = self.progress, None
        report = super().run(dry_run=dry_run, progress=progress or hook)
        self.reports.append(report)
        return report


def install_exporter(
    runtime: Runtime,
    *,
    page_size: int,
    database: SiteDatabaseClient | None = None,
    watermarks: WatermarkStore | None = None,
    **options: Any,
) -> RecordingExporter:
    """Make ``runtime.exporter`` (what the timer function runs) a recorder on the
    runtime's clients with ``page_size`` and ``options``; ``database`` and
    ``watermarks`` replace the runtime's clients."""
    exporter = RecordingExporter(
        database=database or runtime.site_database,
        queue=runtime.queue,
        watermarks=watermarks or runtime.watermarks,
        rules=runtime.rules,
        options=replace(runtime.export_options(), page_size=page_size, **options),
    )
    # ``exporter`` is a cached_property: the instance dict is where its value lives.
    runtime.__dict__["exporter"] = exporter
    return exporter


def report_summary(report: ExportReport) -> dict[str, dict[str, int | bool]]:
    """Per site: enqueued, busy, complete (what a child process tells the test)."""
    return {
        site: {"enqueued": r.enqueued, "busy": r.busy, "complete": r.complete}
        for site, r in report.sites.items()
    }
