"""``cmremediate``: the operator's command line, running the same code as the functions."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from shared.errors import CmRemediateError
from shared.export import ExportReport
from shared.queue_messages import RemediationRequest
from shared.runtime import Runtime, quiet_sdk_logs
from shared.settings import load_settings, read_local_settings

app = typer.Typer(
    name="cmremediate",
    help="Turn ConfigMgr status messages (ID 39997) into remediation collection membership.",
    no_args_is_help=True,
    add_completion=False,
)
# Piped output (CI logs, `| less`) gets a width that keeps the tables readable.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

SettingsOption = Annotated[
    Path | None,
    typer.Option(
        "--settings",
        help="A Functions local.settings.json whose Values override the environment.",
        exists=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log every decision.")]


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False, markup=False)],
        force=True,
    )
    quiet_sdk_logs()


def _runtime(settings_file: Path | None) -> Runtime:
    values = read_local_settings(settings_file) if settings_file else None
    return Runtime(load_settings(values))


def render_requests(requests: list[RemediationRequest], title: str) -> Table:
    """An aligned table of queue messages, one row per (status message, rule)."""
    table = Table(title=title, title_justify="left")
    for column in ("site", "record", "time (UTC)", "machine", "rule", "collection", "action"):
        table.add_column(column, no_wrap=column in ("record", "collection"))
    for r in sorted(requests, key=lambda r: (r.site_code, r.record_id, r.rule)):
        table.add_row(
            r.site_code,
            str(r.record_id),
            r.time_utc.strftime("%Y-%m-%d %H:%M:%S"),
            repr(r.machine_name)[1:-1],
            r.rule,
            r.collection_id,
            r.action,
        )
    return table


def render_export(report: ExportReport) -> Table:
    """Per-site figures of one export run."""
    table = Table(title="export run", title_justify="left")
    for column in ("site", "read", "already seen", "matched", "enqueued", "floor", "high", "state"):
        table.add_column(column, justify="left" if column in ("site", "state") else "right")
    for site in report.sites.values():
        state = "busy (another run)" if site.busy else ("done" if site.complete else "more waiting")
        table.add_row(
            site.site_code,
            str(site.read),
            str(site.skipped_seen),
            str(site.matched),
            str(site.enqueued),
            str(site.floor_record_id),
            str(site.high_record_id),
            state,
        )
    return table


def export_report_json(report: ExportReport) -> dict[str, object]:
    """The report as plain JSON values."""
    return {
        "started_utc": report.started_utc.isoformat(),
        "ended_utc": report.ended_utc.isoformat() if report.ended_utc else None,
        "dry_run": report.dry_run,
        "bounded": report.bounded,
        "read": report.read,
        "enqueued": report.enqueued,
        "sites": {
            code: {
                "read": s.read,
                "already_seen": s.skipped_seen,
                "matched": s.matched,
                "enqueued": s.enqueued,
                "floor_record_id": s.floor_record_id,
                "high_record_id": s.high_record_id,
                "complete": s.complete,
                "busy": s.busy,
            }
            for code, s in report.sites.items()
        },
        "requests": [json.loads(r.to_json()) for r in report.requests],
    }


@app.command()
def export(
    settings_file: SettingsOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be enqueued; change nothing.")
    ] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """One export run, exactly what the timer function does."""
    _configure_logging(verbose)
    runtime = _runtime(settings_file)
    try:
        report = runtime.exporter.run(dry_run=dry_run)
    finally:
        runtime.close()
    if as_json:
        console.print_json(json.dumps(export_report_json(report)))
        return
    console.print(render_export(report))
    if dry_run:
        console.print(render_requests(report.requests, "would enqueue"))


@app.command()
def demo(verbose: VerboseOption = False) -> None:
    """Start the local stack with sample data, run the export, show what it enqueued."""
    _configure_logging(verbose)
    from devstack.demo import run_demo  # the devstack is a development dependency

    run_demo(console)


def main() -> None:
    """Console-script entry point: operator errors print as one clear line, exit 2."""
    try:
        app()
    except CmRemediateError as error:
        errors.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
        sys.exit(2)
