"""Looking without changing: ``status``, ``outcomes``, ``check``, ``config-reference``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer

from cmremediate_cli.app import JsonOption, SettingsOption, VerboseOption, app, opened
from cmremediate_cli.console import configure_logging, console, errors
from cmremediate_cli.render import (
    outcome_json,
    render_check,
    render_outcome_counts,
    render_outcomes,
    render_sites,
)
from shared.app.health import collect_status, run_checks
from shared.platform.settings_reference import configuration_reference


@app.command()
def status(
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Per site: watermark, newest status message, lag; queues; outcomes in the last 24 h."""
    configure_logging(verbose)
    with opened(settings_file) as runtime:
        figures = collect_status(runtime)
    if as_json:
        console.print_json(json.dumps(figures.to_json()))
        return
    console.print(render_sites(figures))
    console.print(
        f"queue {runtime.settings.remediation_queue}: {figures.queue_depth} messages; "
        f"poison: {figures.poison_depth}"
    )
    console.print(render_outcome_counts(figures))
    for collection_id, count in sorted(figures.held.items()):
        console.print(
            f"[yellow]held:[/] {count} add(s) to {collection_id} wait for an operator: "
            f"`cmremediate held list --collection {collection_id}`"
        )
    for error in figures.errors:
        errors.print(f"[red]unavailable:[/] {error}", highlight=False)
    if figures.errors:
        raise typer.Exit(1)


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
    configure_logging(verbose)
    with opened(settings_file) as runtime:
        found = runtime.audit.query(
            machine_name=machine,
            collection_id=collection.upper() if collection else None,
            since=since.replace(tzinfo=since.tzinfo or UTC) if since else None,
        )
    if as_json:
        console.print_json(json.dumps([outcome_json(o) for o in found]))
        return
    console.print(render_outcomes(found))


@app.command()
def check(
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Validate settings and rules, then test every dependency for real, in parallel,
    at most 60 s each."""
    configure_logging(verbose)
    with opened(settings_file) as runtime:
        results = run_checks(runtime)
    if as_json:
        console.print_json(json.dumps([asdict(c) for c in results]))
    else:
        for c in results:
            for line in render_check(c):
                # one line each, however long: every warning line names its rule
                console.print(line, highlight=False, soft_wrap=True)
    if not all(c.ok for c in results):
        raise typer.Exit(1)


@app.command("config-reference")
def config_reference() -> None:
    """Print docs/configuration.md: every setting with its meaning and default."""
    print(configuration_reference(), end="")
