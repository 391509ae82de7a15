#!/usr/bin/env bash
# Set up from scratch and run the whole test suite: the style and layer checks, fast unit
# tests, then the end-to-end tests (real SmolLM2 model, real worker/router processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
bash scripts/lint.sh
python -m pytest -m "not e2e" -q "$@"
python -m pytest -m e2e -q "$@"
