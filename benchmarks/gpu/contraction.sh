#!/usr/bin/env bash
# On the GPU machine, from the repo root: the Triton contraction's GPU tests (compiled kernels
# against sparse_torch, first and second derivatives), its benchmark against e3nn
# (benchmarks/studies/triton_contraction.py, fp32, 27 to 3000 atoms), then, in the time left, the
# harness's training workloads for the compiled step with the Triton contraction beside the
# compiled step with e3nn's (both with the fused convolution). Carry .whl/base and .gpu.
# Results in $OUT/contraction: tests.txt, triton_contraction.{json,md}, bench/.
#   TOTAL_S=560 bash benchmarks/gpu/contraction.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1 MACELAB_OFFLINE=1
start=$(date +%s)
left() { echo $(( ${TOTAL_S:-560} - ($(date +%s) - start) )); }
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
[[ -z "${MACELAB_DATA:-}" && -d .gpu/data ]] && export MACELAB_DATA="$PWD/.gpu/data"
out="${OUT:-$PWD/contraction-out}/contraction"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:xdist -p no:cacheprovider \
    ${TESTS:-tests/kernels/test_triton_gpu.py} 2>&1 | tail -15 | tee "$out/tests.txt"
echo "contraction.sh: tests done after $(( $(date +%s) - start )) s"
timeout "${KERNELS_S:-150}" python3 -m benchmarks.studies.triton_contraction --device cuda \
    --max-seconds 1 --precisions fp32 --backends e3nn triton --atoms ${ATOMS:-27 135 864 3000} \
    --out "$out" 2>&1 | tail -40
echo "contraction.sh: kernels done after $(( $(date +%s) - start )) s"
budget=$(( $(left) - 30 ))
if (( budget > 120 )); then
    timeout "$(( budget + 20 ))" python3 benchmarks/run.py --suite all --out "$out/bench" \
        --budget-s "$budget" --workloads "${WORKLOADS:-train_b5,train_b32}" \
        --paths "${PATHS:-macelab+triton+compiled/32,macelab+conv+compiled/32}" 2>&1 \
        | tail -40 | tee "$out/bench-log.txt"
fi
echo "contraction.sh: finished after $(( $(date +%s) - start )) s"
