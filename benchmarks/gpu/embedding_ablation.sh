#!/usr/bin/env bash
# On the GPU machine, from the repo root: compressed species embeddings (full, low_rank:1,
# low_rank:2, low_rank:4, int8 by default; VARIANTS to choose), DATA (3bpa | acac, default
# 3bpa), BUDGET_S seconds of training each (default 60), PRECISION (default 32). Carry
# .whl/base; .gpu/data is the data root (3BPA has no test sets there: offline, its test
# columns stay empty). Results in $OUT/embedding_ablation: the json, md and png, log.txt and
# runs.tar.gz (the runs' logs and metrics, no checkpoints): five files.
#   BUDGET_S=60 bash benchmarks/gpu/embedding_ablation.sh      # ~8 min for the five variants
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1 MACELAB_OFFLINE=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
[[ -d .gpu/data ]] && export MACELAB_DATA="$PWD/.gpu/data"
out="${OUT:-$PWD/ablation-out}/embedding_ablation"
runs=/tmp/embedding_ablation_runs  # outside $OUT: a timed-out call still brings back the rest
rm -rf "$runs"  # a warm machine keeps /tmp: no stale run folders
mkdir -p "$out" "$runs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/studies/embedding_ablation.py --budget-s "${BUDGET_S:-60}" --data "${DATA:-3bpa}" \
    --variants "${VARIANTS:-full,low_rank:1,low_rank:2,low_rank:4,int8}" \
    --precision "${PRECISION:-32}" --out "$out" --runs-dir "$runs" 2>&1 | tee "$out/log.txt"
status="${PIPESTATUS[0]}"
# The runs' logs and metrics come back; checkpoints (hundreds of MB) do not.
tar --exclude='*.ckpt' -czf "$out/runs.tar.gz" -C "$(dirname "$runs")" "$(basename "$runs")"
exit "$status"
