#!/usr/bin/env bash
# On the GPU machine, from the repo root: macelab vs mace-torch's own trainer on AcAc, the same
# wall-clock budget each (BUDGET_S, default 480 s), one side per device call (each under 10
# minutes), on one warm machine; the sides' files stay in $ROOT between calls:
#
#   ONLY=macelab bash benchmarks/gpu/time_to_accuracy.sh
#   ONLY=mace-torch MACE_ARGS="--enable_cueq=True" bash benchmarks/gpu/time_to_accuracy.sh
#   bash benchmarks/gpu/time_to_accuracy.sh          # no ONLY: both sides (or the table of both)
#
# MACELAB_PATH: macelab's training overrides (default: the study's FASTEST); MACE_DTYPE:
# float64 (default) or float32. Carry .whl/base. Results in $OUT/tta.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
if compgen -G ".whl/base/*.whl" >/dev/null; then
    eval "$(bash benchmarks/gpu/install.sh base)" || exit 1
fi
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
export MACE_RUN_TRAIN="python3 -m mace.cli.run_train"
export MACELAB_COMMIT="$(git log -1 --format=%h 2>/dev/null)"
ROOT="${ROOT:-/tmp/macelab-tta}"
export TORCHINDUCTOR_CACHE_DIR="$ROOT/inductor" TRITON_CACHE_DIR="$ROOT/triton"
out="${OUT:-$ROOT/out}/tta"
mkdir -p "$out" "$ROOT/runs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
args=(--budget-s "${BUDGET_S:-480}" --out "$ROOT/runs" --mace-dtype "${MACE_DTYPE:-float64}")
[[ -n "${MACELAB_PATH:-}" ]] && args+=(--macelab-overrides "$MACELAB_PATH")
[[ -n "${MACE_ARGS:-}" ]] && args+=(--mace-args "$MACE_ARGS")
if [[ -n "${ONLY:-}" ]]; then
    args+=(--only "$ONLY")
elif [[ -f "$ROOT/runs/macelab.json" && -f "$ROOT/runs/mace-torch.json" ]]; then
    args=(--merge --out "$ROOT/runs")
fi
python3 benchmarks/studies/time_to_accuracy.py "${args[@]}" 2>&1 | tee "$out/log.txt"
status=${PIPESTATUS[0]}
cp "$ROOT"/runs/*.json "$ROOT"/runs/*.md "$ROOT"/runs/*.png "$ROOT"/runs/*.log "$out"/ 2>/dev/null
exit "$status"
