"""Session fixtures: the templates parsed once, and one checkov run per session."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest

from tests.infra.bicep import INFRA, CheckovRun, Template, parse_all, templates, tool


@pytest.fixture(scope="session")
def parsed() -> dict[str, dict[str, Any]]:
    """pycep-parser's result for every .bicep file under infra/."""
    return parse_all()


@pytest.fixture(scope="session")
def bicep(parsed: dict[str, dict[str, Any]]) -> dict[str, Template]:
    """Every template, by path relative to infra/ (a parse failure fails the user)."""
    broken = {name: entry["error"] for name, entry in parsed.items() if "error" in entry}
    if broken:
        pytest.fail(f"templates that do not parse: {broken}")
    return templates(parsed)


@pytest.fixture(scope="session")
def checkov() -> CheckovRun:
    """checkov on infra/ (Bicep checks and the secrets scan), once per session: it takes
    seconds to start. --skip-download: no calls to Prisma Cloud (no network here)."""
    started = time.monotonic()
    result = subprocess.run(
        [
            str(tool("checkov")),
            "--directory",
            str(INFRA),
            "--framework",
            "bicep",
            "secrets",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.monotonic() - started
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov wrote no JSON (exit {result.returncode}):\n{result.stderr[-3000:]}")
    reports = document if isinstance(document, list) else [document]
    crashed = set(re.findall(r"Failed to run check (CKV\w+)", result.stderr))
    return CheckovRun(result.returncode, reports, crashed, result.stderr, seconds)
