#!/usr/bin/env bash
# Set everything up, then run the fast test suite (slow tests: add -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
