#!/usr/bin/env bash
# The README's run command: installs what it needs, then runs the demo on the local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m devstack.demo "$@"
