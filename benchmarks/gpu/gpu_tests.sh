#!/usr/bin/env bash
# Every GPU test (pytest -m gpu) on the GPU machine, in parallel shards, from the repo root:
#
#   bash benchmarks/gpu/gpu_tests.sh                 # every test file with GPU tests
#   SHARDS=$'tests/a.py -k x\ntests/b.py' bash benchmarks/gpu/gpu_tests.sh   # chosen shards
#
# CI has no GPU: run this whenever kernel, compile or training-step code changes, and record
# the outcome with the commit in docs/results.md. Each shard is one pytest process (compiling
# is CPU-bound, so shards share the GPU well); JOBS of them run at once (default 4). Writes
# $OUT/gpu_tests/<n>.log per shard, summary.txt, and the per-step numbers the tests record
# (MACELAB_GPU_RECORD) as records.tgz. Carry .whl/base.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
if [[ ":${PYTHONPATH:-}:" != *":/tmp/site-base:"* ]]; then  # not installed by the caller
    eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
fi
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/macelab-inductor}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/macelab-triton}"
out="${OUT:-$PWD/gpu-tests-out}/gpu_tests"
mkdir -p "$out/records"
export MACELAB_GPU_RECORD="$out/records"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)"
git log -1 --format='macelab %h %s' 2>/dev/null || true

if [[ -z "${SHARDS:-}" ]]; then  # one shard per file that holds a GPU test
    SHARDS="$(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests | sort)"
fi
started=$(date +%s)
n=0
while IFS= read -r shard; do
    [[ -z "$shard" ]] && continue
    while (($(jobs -rp | wc -l) >= ${JOBS:-4})); do sleep 2; done
    n=$((n + 1))
    # shellcheck disable=SC2086
    (timeout "${SHARD_S:-540}" python3 -m pytest -q -p no:cacheprovider -m gpu -W ignore \
        $shard >"$out/$n.log" 2>&1
    echo "shard $n exit $? ($(($(date +%s) - started)) s): $shard" >>"$out/summary.txt") &
done <<<"$SHARDS"
wait
for log in "$out"/[0-9]*.log; do
    echo "== $log"
    grep -E "passed|failed|error|FAILED|ERROR" "$log" | tail -n 8
done | tee -a "$out/summary.txt"
tar -czf "$out/records.tgz" -C "$out" records && rm -rf "$out/records"
cat "$out/summary.txt"
