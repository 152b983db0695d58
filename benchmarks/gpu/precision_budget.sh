#!/usr/bin/env bash
# On the GPU machine, from the repo root: accuracy after the same AcAc training budget for
# each precision (benchmarks/studies/precision_budget.py). BUDGET_S seconds of training each
# (default 45), PRECISIONS a comma list (default: the script's seven). Carry .whl/base.
# Results in $OUT/precision_budget.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/budget-out}/precision_budget"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
args=(--budget-s "${BUDGET_S:-45}" --out "$out")
[[ -n "${PRECISIONS:-}" ]] && args+=(--precisions "$PRECISIONS")
python3 benchmarks/studies/precision_budget.py "${args[@]}" 2>&1 | tee "$out/log.txt"
status="${PIPESTATUS[0]}"
# The runs' logs and results come back; checkpoints (hundreds of MB) do not.
[[ -d "$out/runs" ]] && tar --exclude='*.ckpt' -czf "$out/runs.tar.gz" -C "$out" runs \
    && rm -rf "$out/runs"
exit "$status"
