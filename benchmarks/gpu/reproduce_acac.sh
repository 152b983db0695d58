#!/usr/bin/env bash
# The AcAc reproduction (issue 27) on one GPU, in device calls of under 10 minutes each:
# one or more recipes train in the background (each its own process session, side by side on
# the one GPU) across calls, while the machine is kept warm by the next call. Carry .whl/base.
# From the repo root:
#
#   RECIPES=$'paper=\nbudget_cosine=training.scheduler.name=cosine' \
#       bash benchmarks/gpu/reproduce_acac.sh start   # install, start every recipe, CHECK_CMD
#   bash benchmarks/gpu/reproduce_acac.sh wait        # poll until WAIT_S or the runs end
#   bash benchmarks/gpu/reproduce_acac.sh finish      # wait for the end, evaluate, copy to $OUT
#   PATH_FLAGS=... bash benchmarks/gpu/reproduce_acac.sh resume  # stop every run and go on
#       from its last checkpoint (ckpt_path=last; at most one epoch lost), on PATH_FLAGS: a
#       run can change its training path mid-way (the weights do not depend on it)
#
# RECIPES: one "name=overrides" per line (overrides space-separated, may be empty). On a
# machine with several GPUs the recipes go round-robin, one GPU each (CUDA_VISIBLE_DEVICES),
# so eight precisions or seeds train at full speed in one window of an 8-GPU machine; on one
# GPU they share it (each at about half speed for two). PATH_FLAGS:
# the training path (precision, backend, compile, graphs) every recipe shares. MAX_TIME
# (DD:HH:MM:SS): each run's training budget. Runs live in $ROOT (default /tmp/macelab-runs),
# outside the working tree: a device call re-synchronises the tree and would delete them.
# Inductor's and Triton's caches live there too, so a resumed run reuses compiled programs.
# Every call archives what the runs have written so far as $OUT/runs.tgz (a session can end
# any time).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
if compgen -G ".whl/base/*.whl" >/dev/null; then  # the device tool's machine: no network
    eval "$(bash benchmarks/gpu/install.sh base)" || exit 1
fi  # elsewhere: macelab and its dependencies installed as usual (pip install -e .)
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
ROOT="${ROOT:-/tmp/macelab-runs}"
export TORCHINDUCTOR_CACHE_DIR="$ROOT/inductor" TRITON_CACHE_DIR="$ROOT/triton"
OUT="${OUT:-$ROOT/out}"
PATH_FLAGS="${PATH_FLAGS:-precision=32 runtime.backend=triton runtime.compile=true runtime.cuda_graphs=false}"
mkdir -p "$ROOT" "$OUT"
started=$(date +%s)

poll() {  # the last validations of every run, one line each
    python3 - "$ROOT" <<'EOF'
import csv, sys, pathlib
for run in sorted(p for p in pathlib.Path(sys.argv[1]).iterdir() if (p / ".recipe").is_file()):
    path = run / "metrics.csv"
    print(f"== {run.name}: {(run / '.recipe').read_text().strip()}")
    if not path.is_file():
        print("   no metrics.csv yet"); continue
    rows = list(csv.DictReader(path.open()))
    val = [r for r in rows if r.get("val/forces_rmse_meV_per_A")]
    epochs = [r for r in rows if r.get("time/train_epoch_s")]
    for r in val[-4:]:
        print(f"   epoch {r['epoch']:>5} step {r['step']:>7} t {float(r.get('time/elapsed_s') or 0):7.0f} s"
              f"  val E {float(r['val/energy_rmse_meV']):8.2f} meV  F {float(r['val/forces_rmse_meV_per_A']):8.2f} meV/A")
    if epochs:
        last = [float(r["time/train_epoch_s"]) for r in epochs[-20:]]
        print(f"   {len(val)} validations; last epochs {sum(last) / len(last):.2f} s each")
EOF
}

launch() {  # launch NAME GPU OVERRIDES [SEGMENT]: one training process, in the background
    local name="$1" gpu="$2" overrides="$3" log="$ROOT/$1/train.log"
    [[ -n "${4:-}" ]] && log="$ROOT/$1/train.$4.log"  # a resumed segment keeps earlier logs
    echo "$PATH_FLAGS $overrides" >>"$ROOT/$name/.recipe"
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$gpu setsid nohup python3 -m macelab.train experiment=acac $PATH_FLAGS \
        trainer.max_time="${MAX_TIME:-00:00:20:00}" trainer.max_epochs=100000 \
        trainer.enable_progress_bar=false hydra.run.dir="$ROOT/$name" $overrides \
        >"$log" 2>&1 </dev/null &
    echo "started $name on GPU $gpu: $PATH_FLAGS $overrides"
}

running() { pgrep -f "macelab.train.*hydra.run.dir=$ROOT/" >/dev/null; }

collect() {  # what the runs have written so far, as one archive in $OUT (the device tool
    # returns only a few files per call: one archive keeps every run's files together)
    local files=()
    for run in "$ROOT"/*/; do
        [[ -f "$run/.recipe" ]] || continue
        name=$(basename "$run")
        for f in .recipe metrics.csv results.json results.md run_info.json .hydra/config.yaml \
            train.log evaluate_last/results.json precision_report/precision_report.json; do
            [[ -f "$run/$f" ]] && files+=("$name/$f")
        done
        for f in "$run"/train.[0-9]*.log; do  # resumed segments' logs
            [[ -f "$f" ]] && files+=("$name/$(basename "$f")")
        done
    done
    ((${#files[@]})) && tar -czf "$OUT/runs.tgz" -C "$ROOT" "${files[@]}"
}

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
((gpus > 0)) || gpus=1

case "${1:-}" in
    start)
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)"
        git log -1 --format='macelab %h %s' 2>/dev/null || true
        set -f  # overrides may hold stage patterns such as interactions.*.radial_mlp
        index=0
        while IFS= read -r line; do
            [[ -z "$line" ]] && continue
            name="${line%%=*}"
            overrides="${line#*=}"
            mkdir -p "$ROOT/$name"
            rm -f "$ROOT/$name/.recipe"
            echo "$overrides" >"$ROOT/$name/.overrides"
            echo "${MAX_TIME:-00:00:20:00}" >"$ROOT/$name/.max_time"
            launch "$name" $((index % gpus)) "$overrides"
            index=$((index + 1))
        done <<<"${RECIPES:-paper=}"
        set +f
        sleep 5
        if [[ -n "${CHECK_CMD:-}" ]]; then
            timeout "${CHECK_S:-300}" bash -c "$CHECK_CMD" 2>&1 | tee "$OUT/check.log" | tail -n 40
        fi
        ;;
    resume)
        pkill -f "macelab.train.*hydra.run.dir=$ROOT/" && sleep 5
        runs=("$ROOT"/*/)
        set -f
        index=0
        for run in "${runs[@]}"; do
            [[ -f "$run/.overrides" ]] || continue
            name=$(basename "$run")
            MAX_TIME=$(cat "$run/.max_time") launch "$name" $((index % gpus)) \
                "$(cat "$run/.overrides") ckpt_path=last" \
                "$(grep -c . "$run/.recipe")"
            index=$((index + 1))
        done
        set +f
        ;;
    wait | finish) ;;
    *)
        echo "usage: reproduce_acac.sh start|resume|wait|finish" >&2
        exit 2
        ;;
esac

limit=$((started + ${WAIT_S:-560}))
while running && (($(date +%s) < limit)); do sleep 10; done
poll
latest_log() { ls -t "$1"/train*.log | head -n 1; }
for run in "$ROOT"/*/; do [[ -f "$run/.recipe" ]] && tail -n 3 "$(latest_log "$run")"; done
if [[ "$1" == finish ]]; then
    while running; do sleep 5; done
    for run in "$ROOT"/*/; do
        [[ -f "$run/.recipe" ]] || continue
        tail -n 25 "$(latest_log "$run")"
        [[ -f "$run/checkpoints/last.ckpt" ]] && python3 -m macelab.evaluate \
            ckpt_path="$run/checkpoints/last.ckpt" hydra.run.dir="$run/evaluate_last" \
            plots=false 2>&1 | tail -n 12
        # the trained model's equivariance at the precision it trained in (a named one;
        # the per-stage ablation's command-line policies have no name to run it under)
        precision=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['precision']['name'])" \
            "$run/.hydra/config.yaml" 2>/dev/null)
        [[ -f "$run/checkpoints/best.ckpt" && -n "$precision" ]] &&
            timeout 300 python3 -m macelab.precision_report --ckpt "$run/checkpoints/best.ckpt" \
                --precisions "$precision" --out "$run/precision_report" 2>&1 | tail -n 4
    done
fi
collect
ls -la "$OUT" | head -30
