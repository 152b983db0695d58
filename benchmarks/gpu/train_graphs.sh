#!/usr/bin/env bash
# On the GPU machine, from the repo root: the same AcAc training run eager and with
# training.cuda_graphs=true (EPOCHS epochs each, PRECISION), then a table of seconds per
# epoch and validation/test errors. Carry .whl/base. Results in $OUT/train_graphs.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/graphs-out}/train_graphs"
mkdir -p "$out"
for graphs in false true; do
    python3 -m macelab.train experiment=acac precision="'${PRECISION:-32}'" \
        trainer.max_epochs="${EPOCHS:-6}" training.cuda_graphs=$graphs logger=csv \
        trainer.enable_progress_bar=false "hydra.run.dir=$out/graphs_$graphs" "$@" \
        > "$out/graphs_$graphs.log" 2>&1 || { echo "run graphs=$graphs failed:"; tail -30 "$out/graphs_$graphs.log"; }
done
python3 benchmarks/studies/train_graphs_summary.py "$out" | tee "$out/summary.md"
