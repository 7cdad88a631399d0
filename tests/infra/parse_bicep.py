"""Parse every .bicep file under a folder with pycep-parser; print the trees as JSON.

Runs in .venv-infra (scripts/bootstrap.sh), where pycep-parser lives beside checkov;
the tests read its output instead of importing it. A file that does not parse is
reported with its error instead of a tree.

Usage: .venv-infra/bin/python tests/infra/parse_bicep.py infra
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pycep import BicepParser  # type: ignore[import-not-found]  # .venv-infra only


def main(folder: str) -> None:
    """Print {relative path: {"tree": ...} | {"error": ...}} for every .bicep file."""
    root = Path(folder)
    parser = BicepParser()
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.bicep")):
        name = path.relative_to(root).as_posix()
        try:
            results[name] = {"tree": parser.parse(file_path=path)}
        except Exception as error:  # a parse failure is a test result, not a crash
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    # pycep keeps some tokens as objects: str() is their source text.
    json.dump(results, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
