#!/usr/bin/env bash
# The AcAc reproduction (issue 27) on one GPU, in device calls of under 10 minutes each:
# the training runs in the background (its own process session) across calls, while the
# machine is kept warm by the next call. Carry .whl/base. From the repo root:
#
#   bash benchmarks/gpu/reproduce_acac.sh start    # install, start training, GPU tests, poll
#   bash benchmarks/gpu/reproduce_acac.sh wait     # poll until WAIT_S or the run ends
#   bash benchmarks/gpu/reproduce_acac.sh finish   # wait for the end, evaluate, copy to $OUT
#
# The run folder is .runs/acac (ignored); MAX_TIME (DD:HH:MM:SS) is the training budget;
# EXTRA holds further overrides (a recipe change). Inductor's and Triton's caches live in
# .runs/ too, so a resumed run (ckpt_path=last) reuses the compiled programs.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
export TORCHINDUCTOR_CACHE_DIR="$PWD/.runs/inductor" TRITON_CACHE_DIR="$PWD/.runs/triton"
RUN="${RUN:-.runs/acac}"
OUT="${OUT:-$PWD/.runs/out}"
mkdir -p .runs "$OUT"
started=$(date +%s)

poll() {  # the last validations of the run, one line each
    python3 - "$RUN" <<'EOF'
import csv, sys, pathlib
path = pathlib.Path(sys.argv[1]) / "metrics.csv"
if not path.is_file():
    print("no metrics.csv yet"); sys.exit()
rows = [r for r in csv.DictReader(path.open()) if r.get("val/forces_rmse_meV_per_A")]
for r in rows[-int(sys.argv[2]) if len(sys.argv) > 2 else -8:]:
    print(f"epoch {r['epoch']:>5} step {r['step']:>7} t {float(r.get('time/elapsed_s') or 0):7.0f} s"
          f"  val E {float(r['val/energy_rmse_meV']):8.2f} meV  F {float(r['val/forces_rmse_meV_per_A']):8.2f} meV/A")
print(f"{len(rows)} validations")
EOF
    tail -n 3 .runs/train.log
}

running() { pgrep -f "macelab.train.*hydra.run.dir=$RUN" >/dev/null; }

case "${1:-}" in
    start)
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)"
        git log -1 --format='macelab %h %s' 2>/dev/null || true
        # shellcheck disable=SC2086
        setsid nohup python3 -m macelab.train experiment=acac precision=32 model.backend=triton \
            training.compile_step=true training.cuda_graphs=true \
            trainer.max_time="${MAX_TIME:-00:00:21:00}" trainer.max_epochs=100000 \
            training.stage_two.start_fraction=0.75 trainer.enable_progress_bar=false \
            hydra.run.dir="$RUN" ${EXTRA:-} >.runs/train.log 2>&1 </dev/null &
        sleep 5
        MACELAB_GPU_RECORD="$OUT/gpu_tests" timeout "${TESTS_S:-300}" python3 -m pytest -q \
            -p no:cacheprovider tests/training/test_compiled_step_gpu.py \
            tests/training/test_cuda_graphs_gpu.py tests/speed/test_compiled_train.py 2>&1 \
            | tee "$OUT/gpu_tests.log" | tail -n 25
        ;;
    wait | finish) ;;
    *)
        echo "usage: reproduce_acac.sh start|wait|finish" >&2
        exit 2
        ;;
esac

limit=$((started + ${WAIT_S:-560}))
while running && (($(date +%s) < limit)); do sleep 10; done
poll
if [[ "$1" == finish ]]; then
    while running; do sleep 5; done
    tail -n 20 .runs/train.log
    python3 -m macelab.evaluate ckpt_path="$RUN/checkpoints/last.ckpt" \
        hydra.run.dir="$RUN/evaluate_last" plots=false 2>&1 | tail -n 12
    for which in best last; do
        python3 -c "import sys; from macelab.training.checkpoint import artifact_from_checkpoint as a; \
a(sys.argv[1], sys.argv[2])" "$RUN/checkpoints/$which.ckpt" "$OUT/$which"
    done
    tar -czf "$OUT/run.tar.gz" --exclude='*.ckpt' "$RUN" .runs/train.log
    ls -la "$OUT" "$OUT"/*
fi
