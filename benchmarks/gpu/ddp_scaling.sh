#!/usr/bin/env bash
# On a multi-GPU machine, from the repo root: DDP scaling of training (benchmarks/ddp_scaling.py)
# for N = 1 .. the number of GPUs. Carry .whl/base. Results in $OUT/ddp.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/ddp-out}/ddp"
mkdir -p "$out"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
nvidia-smi topo -m 2>/dev/null | head -5 || true
python3 -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__, "gpus", torch.cuda.device_count())'
python3 benchmarks/ddp_scaling.py --devices ${DEVICES:-1 2} --epochs "${EPOCHS:-4}" --out "$out" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
