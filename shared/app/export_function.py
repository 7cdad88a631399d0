"""What the export timer does on each tick: one export run, then its figures as metrics.

The metrics (``shared/platform/telemetry.py``) are what the workbook and the alert
rules read: a run that finished (none for 15 minutes raises an alert), what each site
read and enqueued, how far behind each site is, and the depth of the remediation queue
and of its poison queue, sampled once per run (two storage calls).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from azure.storage.queue import QueueClient

from shared.errors import StorageError
from shared.export.exporter import Exporter, ExportReport
from shared.platform.storage import approximate_depth
from shared.platform.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class ExportFunction:
    """One export run per timer tick, measured."""

    exporter: Exporter
    telemetry: Telemetry
    #: The remediation queue and its poison queue, by role (their depths are sampled).
    queues: Mapping[str, QueueClient]

    def run(self) -> ExportReport:
        """Export; record the run's metrics. Raises what the export raised."""
        report = self.exporter.run()
        ended = report.ended_utc or report.started_utc
        self.telemetry.record("cmremediate.export.runs", 1, {"bounded": report.bounded})
        for site in report.sites.values():
            if site.busy:
                continue  # another instance holds the site: its run reports it
            where = {"site_code": site.site_code}
            self.telemetry.record("cmremediate.export.messages_read", site.read, where)
            self.telemetry.record("cmremediate.export.requests_enqueued", site.enqueued, where)
            self.telemetry.record("cmremediate.export.lag", site.lag_seconds(ended), where)
        self._sample_depths()
        return report

    def _sample_depths(self) -> None:
        for role, queue in self.queues.items():
            try:
                depth = approximate_depth(queue)
            except StorageError as error:
                log.warning("could not read the depth of the %s queue: %s", role, error)
                continue
            self.telemetry.record("cmremediate.queue.depth", depth, {"queue": role})
