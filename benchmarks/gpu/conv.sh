#!/usr/bin/env bash
# On the GPU machine, from the repo root: the fused convolution's GPU tests (compiled Triton,
# not the interpreter), then its benchmark against e3nn (benchmarks/studies/triton_conv.py: paper
# layers 1 and 2, 32 molecules and 2,100-atom water, fp32 and bf16; forward, forces, double
# backward). Carry .whl/base and .gpu (3BPA molecules). Results in $OUT/conv: tests.txt,
# triton_conv.json and .md, log.txt. TESTS: other test files (space-separated); CONV_S=0:
# the tests only.
#   MAX_SECONDS=1 CONV_S=240 bash benchmarks/gpu/conv.sh      # ~4 min
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1 MACELAB_OFFLINE=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
[[ -z "${MACELAB_DATA:-}" && -d .gpu/data ]] && export MACELAB_DATA="$PWD/.gpu/data"
out="${OUT:-$PWD/conv-out}/conv"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
start=$(date +%s)
timeout "${TESTS_S:-180}" python3 -m pytest -q -p no:xdist -p no:cacheprovider \
    ${TESTS:-tests/kernels/test_triton_gpu.py} 2>&1 | tail -30 | tee "$out/tests.txt"
tests="${PIPESTATUS[0]}"
echo "conv.sh: tests took $(( $(date +%s) - start )) s"
[[ "${CONV_S:-240}" == 0 ]] && exit "$tests"
timeout "${CONV_S:-240}" python3 -m benchmarks.studies.triton_conv --device cuda \
    --max-seconds "${MAX_SECONDS:-1}" --out "$out" 2>&1 | tee "$out/log.txt"
bench="${PIPESTATUS[0]}"
echo "conv.sh: finished after $(( $(date +%s) - start )) s"
exit $(( tests || bench ))
