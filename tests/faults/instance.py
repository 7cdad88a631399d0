"""What a child process that models a second app instance (``crash_export``,
``overlap_export``) tells the test about its export. The instance itself is tuned with
``devstack.app_runtime.recording_runtime``, as in the pytest process."""

from __future__ import annotations

from shared.export.exporter import ExportReport


def report_summary(report: ExportReport) -> dict[str, dict[str, int | bool]]:
    """Per site: enqueued, busy, complete (what a child process tells the test)."""
    return {
        site: {"enqueued": r.enqueued, "busy": r.busy, "complete": r.complete}
        for site, r in report.sites.items()
    }
