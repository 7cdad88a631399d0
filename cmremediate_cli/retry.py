"""``cmremediate retry``: decide an ambiguous, unknown-device or target-refused outcome
again, once its cause is gone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from cmremediate_cli.app import JsonOption, SettingsOption, app, opened
from cmremediate_cli.console import console, errors
from cmremediate_cli.held import ByOption, operator
from cmremediate_cli.render import outcome_json, render_outcomes
from shared.domain.outcomes import RETRYABLE, OutcomeKind


@app.command()
def retry(
    record: Annotated[int | None, typer.Option(help="Only this RecordID.")] = None,
    machine: Annotated[str | None, typer.Option(help="Only this machine (any case).")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(help=f"Only this outcome ({', '.join(RETRYABLE)}); repeat for more."),
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only outcomes recorded from this UTC time on.")
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Every retryable outcome (no other filter needed).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be decided again; send nothing.")
    ] = False,
    by: ByOption = None,
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide again: each chosen outcome's request goes back on the queue as the next
    decision; the old audit row stays, linked to the new one (see `outcomes`)."""
    chosen = (record, machine, rule, kind, since)
    if not all_rows and all(c is None for c in chosen):
        errors.print("choose with --record, --machine, --rule, --kind or --since, or give --all")
        raise typer.Exit(2)
    kinds: tuple[OutcomeKind, ...] = RETRYABLE
    if kind:
        unknown = set(kind) - set(RETRYABLE)
        if unknown:
            errors.print(f"--kind: only {', '.join(RETRYABLE)} can be decided again")
            raise typer.Exit(2)
        kinds = tuple(k for k in RETRYABLE if k in kind)
    with opened(settings_file) as runtime:
        rows = runtime.retries.select(
            kinds=kinds,
            record_id=record,
            machine_name=machine,
            rule=rule,
            since=since.replace(tzinfo=since.tzinfo or UTC) if since else None,
        )
        if dry_run:
            if as_json:
                console.print_json(json.dumps([outcome_json(r.outcome) for r in rows]))
            else:
                console.print(render_outcomes([r.outcome for r in rows]))
                console.print(f"{len(rows)} outcome(s) would be decided again")
            return
        report = runtime.retries.retry(rows, by=operator(by))
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "sent": [
                        {**outcome_json(r.outcome), "new_decision": d} for r, d in report.sent
                    ],
                    "skipped": [
                        {**outcome_json(r.outcome), "why": why} for r, why in report.skipped
                    ],
                }
            )
        )
    else:
        queue = runtime.settings.remediation_queue
        console.print(f"{len(report.sent)} outcome(s) sent to be decided again onto {queue}")
        for row, why in report.skipped:
            o = row.outcome
            errors.print(
                f"left alone: site={o.site_code} record={o.record_id} rule={o.rule} "
                f"({o.kind}): {why}",
                highlight=False,
            )
    if report.skipped:
        raise typer.Exit(1)
