#!/usr/bin/env bash
# Installs everything the tests need, checks lint and formatting, and runs the test suite.
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh --quick    # skip the slow end-to-end tests that build and run artifacts
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check .
python3 -m ruff format --check .
if [ "${1:-}" = "--quick" ]; then
  shift
  exec python3 -m pytest -m "not slow" "$@"
fi
exec python3 -m pytest "$@"
