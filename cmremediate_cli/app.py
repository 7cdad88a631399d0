"""The ``cmremediate`` Typer application, its shared options and its error handling."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from cmremediate_cli.console import errors
from shared.app.runtime import Runtime
from shared.errors import CmRemediateError, ConfigurationError

app = typer.Typer(
    name="cmremediate",
    help="Turn ConfigMgr status messages (ID 39997) into remediation collection membership.",
    no_args_is_help=True,
    add_completion=False,
)

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


def read_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of a Functions ``local.settings.json`` file, over the environment."""
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: settings file not found") from None
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ConfigurationError(f"{path}: expected an object with a 'Values' object")
    merged = dict(os.environ)
    merged.update({str(k): str(v) for k, v in values.items()})
    return merged


@contextmanager
def opened(settings_file: Path | None) -> Iterator[Runtime]:
    """The runtime of one command, from the environment or a local.settings.json."""
    values = read_local_settings(settings_file) if settings_file else None
    runtime = Runtime.from_environment(values)  # names every settings and rules problem
    try:
        yield runtime
    finally:
        runtime.close()


def run() -> None:
    """Run the application: operator errors print as one clear line, exit 2."""
    try:
        app()
    except CmRemediateError as error:
        errors.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
        sys.exit(2)
