"""Where the command line writes: results to stdout, logs and progress to stderr."""

from __future__ import annotations

import logging
import sys

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

from shared.app.runtime import quiet_sdk_logs

# Piped output (CI logs, `| less`) gets a width that keeps the tables readable.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def configure_logging(verbose: bool) -> None:
    """Warnings (every decision with ``verbose``) to stderr; the Azure SDK kept quiet."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False, markup=False)],
        force=True,
    )
    quiet_sdk_logs()


def progress() -> Progress:
    """A transient progress bar on stderr, so stdout stays the result."""
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
