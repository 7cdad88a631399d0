#!/usr/bin/env bash
# The README's test command: installs what it needs, then lint, types and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "test: ruff"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy shared triggers devstack bench cmremediate_cli function_app.py
echo "test: import contracts (pyproject.toml [tool.importlinter], docs/architecture.md)"
.venv/bin/lint-imports --no-cache
echo "test: pytest"
exec .venv/bin/pytest "$@"
