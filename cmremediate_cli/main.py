"""``cmremediate``: the operator's command line, running the same code as the functions."""

from __future__ import annotations

import getpass
import json
import logging
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from azure.core.exceptions import AzureError
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from shared.app.health import collect_status, queue_depth, run_checks
from shared.app.runtime import Runtime, quiet_sdk_logs
from shared.domain.outcomes import Outcome
from shared.domain.requests import RemediationRequest
from shared.errors import CmRemediateError
from shared.export.exporter import ExportReport
from shared.platform.settings import configuration_reference, read_local_settings
from shared.queue.local_host import ProcessReport
from shared.queue.poison import PoisonMessage

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


@contextmanager
def _opened(settings_file: Path | None) -> Iterator[Runtime]:
    """The runtime of one command, from the environment or a local.settings.json."""
    values = read_local_settings(settings_file) if settings_file else None
    runtime = Runtime.from_environment(values)  # names every settings and rules problem
    try:
        yield runtime
    finally:
        runtime.close()


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
    _configure_logging(verbose)
    backfill = since is not None or from_record_id is not None
    if from_record_id is not None and (site is None or since is not None):
        errors.print("--from-record-id needs --site, and excludes --since")
        raise typer.Exit(2)
    if not backfill and (site is not None or update_watermark):
        errors.print(
            "--site and --update-watermark belong to a backfill (--since/--from-record-id)"
        )
        raise typer.Exit(2)
    with _opened(settings_file) as runtime, _progress() as bar:
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


@app.command()
def demo(verbose: VerboseOption = False) -> None:
    """Start the local stack with sample data, run the whole pipeline, show every outcome."""
    _configure_logging(verbose)
    from devstack.demo import run_demo  # the devstack is a development dependency

    run_demo(console)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    )


def _queue_depth(runtime: Runtime) -> int | None:
    """The length of the progress bar: unknown when storage does not answer."""
    try:
        return queue_depth(runtime, runtime.settings.remediation_queue)
    except AzureError:
        return None


def _process(runtime: Runtime, max_messages: int | None, quiet: bool) -> ProcessReport:
    total = max_messages or _queue_depth(runtime) or None
    with _progress() as bar:
        task = bar.add_task("processing", total=total, detail="", visible=not quiet)

        started = time.monotonic()

        def step(report: ProcessReport) -> None:
            done = report.processed + report.failed
            rate = done / max(time.monotonic() - started, 1e-6)
            outcomes = ", ".join(f"{n} {k}" for k, n in report.outcomes.most_common(3))
            bar.update(task, completed=done, detail=f"{rate:.1f}/s {outcomes}")

        return runtime.processor.drain(max_messages=max_messages, progress=step)


def render_process(report: ProcessReport) -> Table:
    """What one drain of the queue did."""
    table = Table(title="queue processing", title_justify="left")
    table.add_column("figure")
    table.add_column("count", justify="right")
    for kind, count in sorted(report.outcomes.items()):
        table.add_row(kind, str(count))
    for label, value in (
        ("retried later (device not discovered yet)", report.requeued),
        ("failed (left for a retry)", report.failed),
        ("moved to the poison queue", report.poisoned),
    ):
        table.add_row(label, str(value))
    return table


def _process_json(report: ProcessReport) -> dict[str, object]:
    return {
        "processed": report.processed,
        "failed": report.failed,
        "poisoned": report.poisoned,
        "requeued": report.requeued,
        "outcomes": dict(report.outcomes),
    }


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
    _configure_logging(verbose)
    with _opened(settings_file) as runtime:
        report = _process(runtime, max_messages, quiet=as_json)
    if as_json:
        console.print_json(json.dumps(_process_json(report)))
    else:
        console.print(render_process(report))


@app.command("run-once")
def run_once(
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Export, then process until the queue is empty."""
    _configure_logging(verbose)
    with _opened(settings_file) as runtime:
        exported = runtime.exporter.run()
        processed = _process(runtime, None, quiet=as_json)
    if as_json:
        console.print_json(
            json.dumps(
                {"export": export_report_json(exported), "process": _process_json(processed)}
            )
        )
    else:
        console.print(render_export(exported))
        console.print(render_process(processed))


_STATUS_COLUMNS = (
    "site",
    "newest 39997 (UTC)",
    "newest record",
    "exported up to",
    "last export",
    "state",
)
_OUTCOME_COLUMNS = (
    "recorded (UTC)",
    "site",
    "record",
    "machine",
    "resource",
    "rule",
    "collection",
    "outcome",
    "reason",
)


def _age(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def status(
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Per site: watermark, newest status message, lag; queues; outcomes in the last 24 h."""
    _configure_logging(verbose)
    with _opened(settings_file) as runtime:
        figures = collect_status(runtime)
    if as_json:
        console.print_json(json.dumps(figures.to_json()))
        return
    sites = Table(title="export per site", title_justify="left")
    for column in _STATUS_COLUMNS:
        sites.add_column(column)
    for site in figures.sites:
        sites.add_row(
            site.site_code,
            _age(site.newest_time_utc),
            str(site.newest_record_id or "-"),
            str(site.exported_high_record_id or "-"),
            _age(site.last_export_utc),
            "caught up" if site.caught_up else "[yellow]behind[/]",
        )
    console.print(sites)
    console.print(
        f"queue {runtime.settings.remediation_queue}: {figures.queue_depth} messages; "
        f"poison: {figures.poison_depth}"
    )
    outcomes = Table(title="outcomes in the last 24 h", title_justify="left")
    outcomes.add_column("outcome")
    outcomes.add_column("count", justify="right")
    for kind, count in sorted(figures.outcomes_24h.items()):
        outcomes.add_row(kind, str(count))
    console.print(outcomes)
    for collection_id, count in sorted(figures.held.items()):
        console.print(
            f"[yellow]held:[/] {count} add(s) to {collection_id} wait for an operator: "
            f"`cmremediate held list --collection {collection_id}`"
        )
    for error in figures.errors:
        errors.print(f"[red]unavailable:[/] {error}", highlight=False)
    if figures.errors:
        raise typer.Exit(1)


def _outcome_json(outcome: Outcome) -> dict[str, object]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in asdict(outcome).items()
        if k != "new"
    }


@app.command()
def outcomes(
    settings_file: SettingsOption = None,
    machine: Annotated[str | None, typer.Option(help="Only this machine (any case).")] = None,
    collection: Annotated[str | None, typer.Option(help="Only this collection ID.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only outcomes recorded from this UTC time on.")
    ] = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """The audit trail: why is this device in (or not in) that collection?"""
    _configure_logging(verbose)
    with _opened(settings_file) as runtime:
        found = runtime.audit.query(
            machine_name=machine,
            collection_id=collection.upper() if collection else None,
            since=since.replace(tzinfo=since.tzinfo or UTC) if since else None,
        )
    if as_json:
        console.print_json(json.dumps([_outcome_json(o) for o in found]))
        return
    table = Table(title=f"{len(found)} outcomes, newest first", title_justify="left")
    for column in _OUTCOME_COLUMNS:
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for o in found:
        table.add_row(
            _age(o.recorded_utc),
            o.site_code or "-",
            str(o.record_id or "-"),
            repr(o.machine_name)[1:-1] if o.machine_name else "-",
            str(o.resource_id or "-"),
            o.rule or "-",
            o.collection_id or "-",
            o.kind + (" (dry run)" if o.dry_run else ""),
            o.reason,
        )
    console.print(table)


poison_app = typer.Typer(help="The poison queue: list, show and requeue failed messages.")
app.add_typer(poison_app, name="poison")


def _poison_json(message: PoisonMessage) -> dict[str, object]:
    return {
        "id": message.id,
        "inserted_utc": message.inserted_utc.isoformat() if message.inserted_utc else None,
        "dequeue_count": message.dequeue_count,
        "body": message.body,
        "problem": message.problem,
    }


@poison_app.command("list")
def poison_list(settings_file: SettingsOption = None, as_json: JsonOption = False) -> None:
    """The oldest 32 poisoned messages (the service's peek limit)."""
    with _opened(settings_file) as runtime:
        messages = runtime.poison.peek()
    if as_json:
        console.print_json(json.dumps([_poison_json(m) for m in messages]))
        return
    table = Table(
        title=f"{runtime.settings.poison_queue}: {len(messages)} shown", title_justify="left"
    )
    for column in ("id", "inserted (UTC)", "site", "record", "machine", "collection", "problem"):
        table.add_column(column)
    for m in messages:
        r = m.request
        table.add_row(
            m.id,
            _age(m.inserted_utc),
            r.site_code if r else "-",
            str(r.record_id) if r else "-",
            repr(r.machine_name)[1:-1] if r else "-",
            r.collection_id if r else "-",
            m.problem or "",
        )
    console.print(table)


@poison_app.command("show")
def poison_show(
    message_id: Annotated[str, typer.Argument(help="The message ID from `poison list`.")],
    settings_file: SettingsOption = None,
) -> None:
    """One poisoned message in full."""
    with _opened(settings_file) as runtime:
        message = runtime.poison.show(message_id)
    console.print_json(json.dumps(_poison_json(message)))


@poison_app.command("requeue")
def poison_requeue(
    message_id: Annotated[str | None, typer.Argument(help="One message ID.")] = None,
    all_messages: Annotated[bool, typer.Option("--all", help="Every poisoned message.")] = False,
    settings_file: SettingsOption = None,
) -> None:
    """Put poisoned messages back on the remediation queue once the cause is fixed."""
    if (message_id is None) == (not all_messages):
        errors.print("give one message ID or --all")
        raise typer.Exit(2)
    with _opened(settings_file) as runtime:
        moved = runtime.poison.requeue(None if all_messages else message_id)
    console.print(f"requeued {moved} message(s) to {runtime.settings.remediation_queue}")


held_app = typer.Typer(
    help="Adds the blast-radius guard held (MAX_ADDS_PER_COLLECTION_PER_HOUR): "
    "list, release or discard them."
)
app.add_typer(held_app, name="held")

HeldIds = Annotated[
    list[str] | None,
    typer.Argument(help="Held IDs from `held list` (<site>-<record>-<rule>).", show_default=False),
]
HeldCollection = Annotated[
    str | None, typer.Option("--collection", help="Every held add of this collection.")
]
HeldAll = Annotated[bool, typer.Option("--all", help="Every held add.")]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who decides, for the audit trail (default: user@host)."),
]


def _operator(by: str | None) -> str:
    return by or f"{getpass.getuser()}@{socket.gethostname()}"


def _decide_held(
    verb: Literal["release", "discard"],
    ids: list[str] | None,
    collection: str | None,
    all_held: bool,
    by: str | None,
    settings_file: Path | None,
) -> None:
    # Exactly one way of choosing, so that nothing is released by accident.
    if sum((bool(ids), collection is not None, all_held)) != 1:
        errors.print("name held IDs, or give --collection ID, or --all")
        raise typer.Exit(2)
    with _opened(settings_file) as runtime:
        decide = runtime.held.release if verb == "release" else runtime.held.discard
        report = decide(ids or [], collection_id=collection, by=_operator(by))
    if verb == "release":
        console.print(
            f"released {len(report.done)} held add(s) onto {runtime.settings.remediation_queue}"
        )
    else:
        console.print(f"discarded {len(report.done)} held add(s)")
    if report.skipped_dry_run:
        console.print(
            f"{len(report.skipped_dry_run)} dry-run hold(s) left alone: a dry run only shows "
            "what would be held"
        )
    if report.not_held:
        errors.print(f"not held (any more): {', '.join(report.not_held)}", highlight=False)
        raise typer.Exit(1)


@held_app.command("list")
def held_list(
    collection: Annotated[str | None, typer.Option(help="Only this collection ID.")] = None,
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Held adds, oldest first: review them before releasing."""
    with _opened(settings_file) as runtime:
        held = runtime.held.pending(collection)
    if as_json:
        console.print_json(json.dumps([{"id": h.id, **_outcome_json(h.outcome)} for h in held]))
        return
    table = Table(title=f"{len(held)} held add(s), oldest first", title_justify="left")
    for column in ("id", "held (UTC)", "machine", "resource", "collection", "state", "reason"):
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for h in held:
        o = h.outcome
        state = "dry run" if o.dry_run else f"released by {o.decided_by}" if o.released else "held"
        table.add_row(
            h.id,
            _age(o.recorded_utc),
            repr(h.request.machine_name)[1:-1],
            str(o.resource_id or "-"),
            h.request.collection_id,
            state,
            o.reason,
        )
    console.print(table)


@held_app.command("release")
def held_release(
    ids: HeldIds = None,
    collection: HeldCollection = None,
    all_held: HeldAll = False,
    by: ByOption = None,
    settings_file: SettingsOption = None,
) -> None:
    """Add held devices after all: they go back on the queue and skip the guard."""
    _decide_held("release", ids, collection, all_held, by, settings_file)


@held_app.command("discard")
def held_discard(
    ids: HeldIds = None,
    collection: HeldCollection = None,
    all_held: HeldAll = False,
    by: ByOption = None,
    settings_file: SettingsOption = None,
) -> None:
    """Decide held adds for good without adding them (outcome ``discarded``)."""
    _decide_held("discard", ids, collection, all_held, by, settings_file)


@app.command()
def check(
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Validate settings and rules, then test every dependency for real, in parallel,
    at most 60 s each."""
    _configure_logging(verbose)
    with _opened(settings_file) as runtime:
        results = run_checks(runtime)
    if as_json:
        console.print_json(json.dumps([asdict(c) for c in results]))
    else:
        for c in results:
            mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
            console.print(f"{mark} {c.name}: {c.detail}", highlight=False)
            if not c.ok:
                console.print(f"     fix: {c.hint}", highlight=False)
    if not all(c.ok for c in results):
        raise typer.Exit(1)


@app.command("config-reference")
def config_reference() -> None:
    """Print docs/configuration.md: every setting with its meaning and default."""
    print(configuration_reference(), end="")


def main() -> None:
    """Console-script entry point: operator errors print as one clear line, exit 2."""
    try:
        app()
    except CmRemediateError as error:
        errors.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
        sys.exit(2)
