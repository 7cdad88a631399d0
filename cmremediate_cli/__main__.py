"""``python -m cmremediate_cli``: the same as the ``cmremediate`` command."""

from cmremediate_cli.main import main

main()
