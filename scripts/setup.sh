#!/usr/bin/env bash
# Create .venv inside the checkout (once) and install stimulative with its test extras.
# torch/torchvision come from pip's index or the machine's local package store.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import stimulative, pytest, hypothesis, timm" && [ -x .venv/bin/ruff ] 2>/dev/null; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e ".[test]"
fi
