#!/usr/bin/env bash
# GPU smoke check of the real-model scenario: scenarios/smollm2.yaml on CUDA for a few rounds,
# printing seconds per round and peak GPU memory (benchmarks/results/gpu_smoke.{json,md}).
#
#   bash benchmarks/gpu_smoke.sh            # ROUNDS=3 by default; PYTHON=... to pick the interpreter
#
# On a machine where torch sees no CUDA GPU it prints why it skips and exits 0, so it is safe
# to call from CI on CPU-only runners.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
ROUNDS="${ROUNDS:-3}"
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "gpu_smoke: $PY cannot import torch; run 'make demo' first (creates .venv) or set PYTHON=/path/to/venv/bin/python" >&2
    exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_smoke: SKIPPED - torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False: no GPU, no driver, or a CPU-only torch build); nothing was run."
    exit 0
fi
"$PY" -c 'import torch; print("gpu_smoke: GPU", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
exec "$PY" benchmarks/real_model.py --device cuda --rounds "$ROUNDS" --set eval.per_domain=10 --tag gpu_smoke \
    --load-note "gpu_smoke.sh: ${ROUNDS} rounds on CUDA"
