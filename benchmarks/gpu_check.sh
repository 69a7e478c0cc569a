#!/usr/bin/env bash
# faceage GPU throughput check: training img/s (paper config 2.0x/224 px/batch 128, bf16,
# channels-last, compile off/on; a 0.5x/112 px one) and inference img/s, on synthetic data.
# Runs from a fresh copy of the repo with PyTorch already installed; downloads nothing.
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (under 5 minutes)
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh   # tiny CPU dry run of the script itself
# Results: a Markdown table on stdout, $OUT/gpu_check.json and $OUT/gpu_check.md (OUT defaults to ./gpu_check_out).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"   # no install needed (no pip, no network)
export OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
"$PY" -c "import torch, numpy, yaml, tqdm, safetensors, matplotlib, PIL" \
  || { echo "gpu_check: a dependency is missing (needs torch numpy pyyaml tqdm safetensors matplotlib pillow)"; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout "${GPU_CHECK_TIMEOUT:-280}" "$PY" -m benchmarks.gpu_check 2>&1 | tee "$OUT/gpu_check.log"
