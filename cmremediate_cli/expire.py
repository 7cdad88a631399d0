"""``cmremediate expire``: remove the memberships of a rule whose time is up, on demand
(the function app's daily sweep does the same for every rule with remove_after_days)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from cmremediate_cli.app import JsonOption, SettingsOption, app, opened
from cmremediate_cli.console import console, errors
from cmremediate_cli.held import ByOption, operator
from cmremediate_cli.render import outcome_json, render_outcomes


@app.command()
def expire(
    rule: Annotated[str, typer.Option(help="The rule whose adds end.")],
    older_than: Annotated[
        float | None,
        typer.Option(help="Days since the add (default: the rule's remove_after_days)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing.")
    ] = False,
    by: ByOption = None,
    settings_file: SettingsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove the direct rules cm-remediate added for RULE longer ago than its
    remove_after_days (or --older-than), each once, through the blast-radius guard;
    every removal is recorded as the next decision after the add."""
    with opened(settings_file) as runtime:
        found = runtime.rules.named(rule)
        if found is None or found.action != "add":
            errors.print(f"--rule: no rule {rule!r} that adds in the rules file")
            raise typer.Exit(2)
        if older_than is None and found.remove_after_days is None:
            errors.print(f"rule {rule!r} has no remove_after_days: give --older-than DAYS")
            raise typer.Exit(2)
        age = timedelta(days=older_than) if older_than is not None else None
        due = runtime.expiry.due(found, older_than=age)
        if dry_run:
            if as_json:
                console.print_json(json.dumps([outcome_json(r.outcome) for r in due]))
            else:
                console.print(render_outcomes([r.outcome for r in due]))
                console.print(f"{len(due)} membership(s) would be removed")
            return
        report = runtime.expiry.expire(found, due, by=operator(by))
    if as_json:
        done = [outcome_json(o) for o in report.done]
        left = [{**outcome_json(r.outcome), "why": why} for r, why in report.left]
        console.print_json(json.dumps({"done": done, "left": left}))
    else:
        removed = sum(1 for o in report.done if o.kind == "removed")
        console.print(
            f"rule {rule}: {report.due} due, {removed} removed, "
            f"{len(report.done) - removed} no longer member(s), {len(report.left)} left"
        )
        for row, why in report.left:
            o = row.outcome
            errors.print(
                f"left: site={o.site_code} record={o.record_id} resource={o.resource_id}: {why}",
                highlight=False,
            )
    if report.left:
        raise typer.Exit(1)
