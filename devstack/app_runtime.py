"""The process runtime the functions use, as the demo, the benchmarks and the fault
suite prepare it before the host invokes anything.

The Functions host hands the worker its app settings as environment variables, and the
functions build their runtime from them on first use (``shared.app.runtime.get_runtime``).
:func:`app_settings` sets exactly those; :func:`recording_runtime` builds the runtime
from them itself, its exporter a :class:`RecordingExporter`, and installs it as the
one the functions use: an export still runs only because the worker invoked
``export_status_messages``, and its report, which the function does not return, is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from devstack.functions_host import REPO, Invocation
from shared.app.overrides import ExporterFactory, Overrides
from shared.app.runtime import Runtime, install_runtime, process_overrides
from shared.export.exporter import Exporter, ExportOptions, ExportReport
from shared.platform.settings import SETTING_FIELDS
from shared.queue.options import QueueOptions

_QUEUES = QueueOptions.from_host_json(REPO)
#: The app settings the host needs besides the stack's: it resolves %EXPORT_SCHEDULE%
#: and %REMEDIATION_QUEUE% in the bindings from them.
HOST_SETTINGS = {
    "REMEDIATION_QUEUE": "cm-remediation",
    "EXPORT_SCHEDULE": "0 */5 * * * *",
    "AzureWebJobsScriptRoot": str(REPO),
    # As infra sets it: a thread for every invocation host.json lets run at once (the
    # worker's own default is min(32, CPUs + 4)).
    "PYTHON_THREADPOOL_THREAD_COUNT": str(_QUEUES.batch_size + _QUEUES.new_batch_threshold),
}

ExportProgress = Callable[[ExportReport], None]


@contextmanager
def app_settings(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the app settings in this process's environment (any other
    setting the app reads, say a DRY_RUN in the caller's shell, is hidden meanwhile);
    the environment as it was afterwards."""
    # Lower case: the settings model matches names without regard to case.
    names = {name.lower() for name in SETTING_FIELDS}
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            lowered = name.lower()
            if lowered in names or lowered.startswith("azurewebjobsstorage__"):
                del os.environ[name]
        os.environ.update(values)
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


def succeeded(invocation: Invocation) -> Invocation:
    """The invocation, or RuntimeError with what the host would log of its failure."""
    if not invocation.ok:
        raise RuntimeError(f"{invocation.function} failed: {invocation.error}")
    return invocation


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
        """The export run, recorded."""
        hook, self.progress = self.progress, None
        report = super().run(dry_run=dry_run, progress=progress or hook)
        self.reports.append(report)
        return report


def recording_exporter(**tuning: Any) -> ExporterFactory:
    """For ``Overrides.exporter``: a RecordingExporter on the runtime's ports, fields of
    its ExportOptions replaced by ``tuning`` (``page_size=``, …)."""

    def build(*, options: ExportOptions, **ports: Any) -> Exporter:
        return RecordingExporter(options=replace(options, **tuning), **ports)

    return build


def recording_runtime(
    overrides: Overrides | None = None, **tuning: Any
) -> tuple[Runtime, RecordingExporter]:
    """The runtime the functions use from now on (until ``reset_runtime()``), built
    from the environment with ``overrides`` (default: the process's) and a
    RecordingExporter tuned by ``tuning`` (``page_size=``, …); and that exporter."""
    base = overrides if overrides is not None else process_overrides()
    runtime = Runtime.from_environment(
        overrides=replace(base, exporter=recording_exporter(**tuning))
    )
    install_runtime(runtime)
    exporter = runtime.exporter
    assert isinstance(exporter, RecordingExporter)
    return runtime, exporter
