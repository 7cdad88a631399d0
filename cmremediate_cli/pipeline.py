"""The pipeline by hand: ``export`` (or a backfill), ``process``, ``run-once``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from cmremediate_cli.app import JsonOption, SettingsOption, VerboseOption, app, opened
from cmremediate_cli.console import configure_logging, console, errors, progress
from cmremediate_cli.render import (
    export_report_json,
    process_json,
    render_export,
    render_process,
    render_requests,
)
from shared.app.health import queue_depth
from shared.app.runtime import Runtime
from shared.errors import StorageError
from shared.export.exporter import ExportReport
from shared.queue.local_host import ProcessReport


@app.command()
def export(
    settings_file: SettingsOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be enqueued; change nothing.")
    ] = False,
    since: Annotated[
        datetime | None,
        typer.Option(help="Backfill: re-read messages from this UTC time on."),
    ] = None,
    from_record_id: Annotated[
        int | None, typer.Option(help="Backfill: re-read RecordIDs above this (with --site).")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Backfill only this site code.")] = None,
    update_watermark: Annotated[
        bool, typer.Option(help="Backfill: count the re-read rows as exported.")
    ] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """One export run, exactly what the timer function does; or a backfill."""
    configure_logging(verbose)
    backfill = since is not None or from_record_id is not None
    if from_record_id is not None and (site is None or since is not None):
        errors.print("--from-record-id needs --site, and excludes --since")
        raise typer.Exit(2)
    if not backfill and (site is not None or update_watermark):
        errors.print(
            "--site and --update-watermark belong to a backfill (--since/--from-record-id)"
        )
        raise typer.Exit(2)
    with opened(settings_file) as runtime, progress() as bar:
        task = bar.add_task("exporting", total=None, detail="", visible=not as_json)

        started = time.monotonic()

        def step(report: ExportReport) -> None:
            rate = report.read / max(time.monotonic() - started, 1e-6)
            bar.update(
                task,
                completed=report.read,
                detail=f"{report.read} read, {report.enqueued} enqueued, {rate:.0f}/s",
            )

        if backfill:
            report = runtime.exporter.backfill(
                since=since.replace(tzinfo=since.tzinfo or UTC) if since else None,
                site_code=site.upper() if site else None,
                after_record_id=from_record_id or 0,
                dry_run=dry_run,
                update_watermark=update_watermark,
                progress=step,
            )
        else:
            report = runtime.exporter.run(dry_run=dry_run, progress=step)
    if as_json:
        console.print_json(json.dumps(export_report_json(report)))
        return
    console.print(render_export(report))
    if dry_run:
        console.print(render_requests(report.requests, "would enqueue"))


def _queue_depth(runtime: Runtime) -> int | None:
    """The length of the progress bar: unknown when storage does not answer."""
    try:
        return queue_depth(runtime, runtime.settings.remediation_queue)
    except StorageError:
        return None


def _process(runtime: Runtime, max_messages: int | None, quiet: bool) -> ProcessReport:
    total = max_messages or _queue_depth(runtime) or None
    with progress() as bar:
        task = bar.add_task("processing", total=total, detail="", visible=not quiet)

        started = time.monotonic()

        def step(report: ProcessReport) -> None:
            done = report.processed + report.failed
            rate = done / max(time.monotonic() - started, 1e-6)
            outcomes = ", ".join(f"{n} {k}" for k, n in report.outcomes.most_common(3))
            bar.update(task, completed=done, detail=f"{rate:.1f}/s {outcomes}")

        return runtime.local_host.drain(max_messages=max_messages, progress=step)


@app.command()
def process(
    settings_file: SettingsOption = None,
    max_messages: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many messages.")
    ] = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Drain the queue through the queue function's handler, with the host's semantics."""
    configure_logging(verbose)
    with opened(settings_file) as runtime:
        report = _process(runtime, max_messages, quiet=as_json)
    if as_json:
        console.print_json(json.dumps(process_json(report)))
    else:
        console.print(render_process(report))


@app.command("run-once")
def run_once(
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Export, then process until the queue is empty."""
    configure_logging(verbose)
    with opened(settings_file) as runtime:
        exported = runtime.exporter.run()
        processed = _process(runtime, None, quiet=as_json)
    if as_json:
        console.print_json(
            json.dumps({"export": export_report_json(exported), "process": process_json(processed)})
        )
    else:
        console.print(render_export(exported))
        console.print(render_process(processed))
