#!/usr/bin/env bash
# Set everything up, then lint (ruff) and run the fast test suite (slow tests: add -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
exec .venv/bin/python -m pytest -q "$@"
