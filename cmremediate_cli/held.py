"""``cmremediate held``: the adds the blast-radius guard held, for an operator to decide."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import Annotated, Literal

import typer

from cmremediate_cli.app import JsonOption, SettingsOption, app, opened
from cmremediate_cli.console import console, errors
from cmremediate_cli.render import held_json, render_held

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


def operator(by: str | None) -> str:
    """Who decides, for the audit trail: ``--by``, else user@host."""
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
    with opened(settings_file) as runtime:
        decide = runtime.held.release if verb == "release" else runtime.held.discard
        report = decide(ids or [], collection_id=collection, by=operator(by))
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
    with opened(settings_file) as runtime:
        held = runtime.held.pending(collection)
    if as_json:
        console.print_json(json.dumps(held_json(held)))
        return
    console.print(render_held(held))


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
