"""``python -m shared`` runs the ``cmremediate`` command line."""

from shared.cli import main

main()
