#!/usr/bin/env bash
# PPD demo: set up, start ppd-server (embedded 1 prefill + 1 decode ppd-worker, real SmolLM2,
# policy ppd) in the background, run a 4-turn session printing each turn's route, workers,
# cached tokens and TTFT, then stop the server (it stops its workers) by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/ppd-server ] || [ "${PPD_DEMO_SETUP:-0}" = "1" ]; then
  PPD_EXTRAS=${PPD_EXTRAS:-engine} bash scripts/setup.sh
fi
. .venv/bin/activate

PORT=${PPD_DEMO_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE="http://127.0.0.1:${PORT}"
LOG=$(mktemp -t ppd-demo-server.XXXXXX.log)

echo "[demo] starting ppd-server on ${BASE} (embedded 1P1D, SmolLM2, policy ppd); log: ${LOG}"
ppd-server --port "${PORT}" --embedded 1P1D --model smollm2 --policy ppd >"${LOG}" 2>&1 &
SERVER_PID=$!
stop_server() {
  if kill -0 "${SERVER_PID}" 2>/dev/null; then
    echo "[demo] stopping ppd-server (pid ${SERVER_PID})"
    kill -TERM "${SERVER_PID}" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "${SERVER_PID}" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "${SERVER_PID}" 2>/dev/null || true
  fi
}
trap stop_server EXIT INT TERM

# Wait for /health (the server only listens once its workers have loaded the model).
python - "${BASE}" "${SERVER_PID}" "${LOG}" <<'PY'
import os, sys, time, urllib.request
base, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
start, shown = time.monotonic(), 0
while time.monotonic() - start < 600:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"[demo] ppd-server exited early; its log:\n{open(log).read()}")
    lines = open(log).read().splitlines()
    for line in lines[shown:]:
        if line.startswith("[ppd-server]"):
            print(line, flush=True)
    shown = len(lines)
    try:
        with opener.open(base + "/health", timeout=2) as r:
            if r.status == 200:
                print(f"[demo] ppd-server healthy after {time.monotonic() - start:.0f}s", flush=True)
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("[demo] ppd-server did not become healthy within 600s")
PY

echo "[demo] a 4-turn conversation through the PPD SDK (streaming, greedy):"
PPD_BASE_URL="${BASE}" python examples/route_report.py --turns 4
echo "[demo] turn 1 goes prefill->decode (pd); later turns reuse the decode worker's KV (local) while it is idle."
