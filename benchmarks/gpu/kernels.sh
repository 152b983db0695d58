#!/usr/bin/env bash
# On the GPU machine, from the repo root: the Triton kernels' GPU tests (compiled, not the
# interpreter), then the symmetric-contraction benchmark (e3nn, sparse_torch, triton; fp32
# and bf16; 864 and 3000 atoms; forward, forces, backward, double backward). Carry
# .whl/base. Results in $OUT/kernels: tests.txt, triton_contraction.json and .md, log.txt.
#   MAX_SECONDS=2 bash benchmarks/gpu/kernels.sh      # ~4 min
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1 MACELAB_OFFLINE=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/kernels-out}/kernels"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest -q -p no:xdist -p no:cacheprovider tests/kernels/test_triton_gpu.py \
    2>&1 | tail -30 | tee "$out/tests.txt"
tests="${PIPESTATUS[0]}"
python3 -m benchmarks.studies.triton_contraction --device cuda --max-seconds "${MAX_SECONDS:-2}" \
    --out "$out" 2>&1 | tee "$out/log.txt"
bench="${PIPESTATUS[0]}"
exit $(( tests || bench ))
