"""``cmremediate``: the operator's command line, running the same code as the functions.

Each command module registers its commands on :data:`app` when imported.
"""

from __future__ import annotations

from cmremediate_cli import expire, held, inspection, pipeline, poison, retry, signin
from cmremediate_cli.app import app, run

__all__ = ["app", "main"]
#: Importing a command module registers its commands; naming them keeps the imports.
_COMMANDS = (pipeline, inspection, poison, held, retry, expire, signin)


def main() -> None:
    """Console-script entry point."""
    run()
