"""The operator's command line, ``cmremediate``: installed with the ``cli`` extra, never
deployed with the function app (typer and rich are not in requirements.txt)."""
