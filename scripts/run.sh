#!/usr/bin/env bash
# Set everything up, then run the default job: stimulative training of resnet20 on the digits.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/stimulative train "$@"
