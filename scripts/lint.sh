#!/usr/bin/env bash
# The tools that hold the style, configured in pyproject.toml: ruff (lint, then format), mypy
# (strict on ppd_sdk and the routing brain, lenient elsewhere) and the layer contract
# (import-linter: who may import whom, no cycles), then the dependency audit (pip-audit over
# the installed environment, scripts/audit_deps.py: fails on a known vulnerability not listed with
# a reason in scripts/pip-audit-ignore.txt; warns and passes when the service is unreachable).
# Run from an activated environment with the dev extra; scripts/test.sh runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/server:$PWD/kernels:$PWD/integrations${PYTHONPATH:+:$PYTHONPATH}"
echo "[lint] ruff check";          ruff check --no-fix .
echo "[lint] ruff format --check"; ruff format --check .
echo "[lint] mypy";                mypy
echo "[lint] import contracts";    lint-imports
echo "[lint] dependency audit";  python scripts/audit_deps.py
