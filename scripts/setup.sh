#!/usr/bin/env bash
# Create .venv inside the checkout (once) and install stimulative with its test extras;
# installed again whenever pyproject.toml changes (its hash is kept in .venv/).
# torch/torchvision come from pip's index or the machine's local package store.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.stimulative-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import stimulative" 2>/dev/null; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e ".[test]"
    echo "$want" > "$stamp"
fi
