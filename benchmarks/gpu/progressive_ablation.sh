#!/usr/bin/env bash
# On the GPU machine, from the repo root: progressive correlation order vs nu = 3 from the
# start, AcAc, BUDGET_S seconds of training each (default 150), SCHEDULE epoch:order pairs
# (default 0:1,4:2,8:3), PRECISION (default 32). Carry .whl/base. Results in
# $OUT/progressive_ablation.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/ablation-out}/progressive_ablation"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/studies/progressive_ablation.py --budget-s "${BUDGET_S:-150}" \
    --schedule "${SCHEDULE:-0:1,4:2,8:3}" --precision "${PRECISION:-32}" --out "$out" 2>&1 \
    | tee "$out/log.txt"
status="${PIPESTATUS[0]}"
# The runs' logs and results come back; checkpoints (hundreds of MB) do not.
tar --exclude='*.ckpt' -czf "$out/runs.tar.gz" -C "$out" runs && rm -rf "$out/runs"
exit "$status"
