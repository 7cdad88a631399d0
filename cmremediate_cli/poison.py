"""``cmremediate poison``: list, show and requeue failed messages."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cmremediate_cli.app import JsonOption, SettingsOption, app, opened
from cmremediate_cli.console import console, errors
from cmremediate_cli.render import poison_json, render_poison

poison_app = typer.Typer(help="The poison queue: list, show and requeue failed messages.")
app.add_typer(poison_app, name="poison")


@poison_app.command("list")
def poison_list(settings_file: SettingsOption = None, as_json: JsonOption = False) -> None:
    """The oldest 32 poisoned messages (the service's peek limit)."""
    with opened(settings_file) as runtime:
        messages = runtime.poison.peek()
    if as_json:
        console.print_json(json.dumps([poison_json(m) for m in messages]))
        return
    console.print(render_poison(messages, runtime.settings.poison_queue))


@poison_app.command("show")
def poison_show(
    message_id: Annotated[str, typer.Argument(help="The message ID from `poison list`.")],
    settings_file: SettingsOption = None,
) -> None:
    """One poisoned message in full."""
    with opened(settings_file) as runtime:
        message = runtime.poison.show(message_id)
    console.print_json(json.dumps(poison_json(message)))


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
    with opened(settings_file) as runtime:
        moved = runtime.poison.requeue(None if all_messages else message_id)
    console.print(f"requeued {moved} message(s) to {runtime.settings.remediation_queue}")
