"""Indexing the app through Microsoft's worker library, in a fresh interpreter.

A worker process starts with the app's settings, imports ``function_app.py`` and
validates every function; ``python -m devstack.worker_index [SCRIPT_ROOT]`` does the
same through :class:`~devstack.functions_host.FunctionsHost` and prints, as JSON, the
functions and bindings the host would see, or the worker's refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.functions_host import REPO, FunctionsHost, IndexingFailed


@dataclass(frozen=True)
class IndexReport:
    """What ``index`` saw: the functions, or the worker's refusal."""

    functions: dict[str, list[dict[str, Any]]]
    error: str | None


def index_app(script_root: Path = REPO) -> IndexReport:
    """Index the app once through the worker (this process's one host)."""
    host = FunctionsHost(script_root)
    try:
        with host:
            return IndexReport({name: list(f.bindings) for name, f in host.functions.items()}, None)
    except IndexingFailed as error:
        return IndexReport({}, str(error))


def index_in_fresh_process(
    environ: Mapping[str, str], script_root: Path = REPO, timeout: float = 120
) -> IndexReport:
    """Index in a new interpreter with exactly ``environ``, as a new worker starts."""
    result = subprocess.run(
        [sys.executable, "-m", "devstack.worker_index", str(script_root)],
        env={**environ, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=script_root,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"index process failed ({result.returncode}):\n{result.stderr}")
    document = json.loads(result.stdout.splitlines()[-1])
    return IndexReport(document["functions"], document["error"])


def _main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python -m devstack.worker_index [SCRIPT_ROOT]", file=sys.stderr)
        return 2
    report = index_app(Path(argv[0]) if argv else REPO)
    print(json.dumps({"functions": report.functions, "error": report.error}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
