#!/usr/bin/env bash
# On the GPU machine, from the repo root: macelab vs mace-torch's own trainer on AcAc, the same
# wall-clock budget each (BUDGET_S, default 180 s). Carry .whl/base. Results in $OUT/tta.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
export MACE_RUN_TRAIN="python3 -m mace.cli.run_train"
out="${OUT:-$PWD/tta-out}/tta"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/studies/time_to_accuracy.py --budget-s "${BUDGET_S:-180}" --out "$out" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
