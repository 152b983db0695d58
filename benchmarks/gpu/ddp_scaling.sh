#!/usr/bin/env bash
# On a multi-GPU machine, from the repo root: DDP scaling of training (benchmarks/studies/ddp_scaling.py).
# Carry .whl/base (and .gpu for 3BPA). Results in $OUT: ddp.tar.gz (every run's log, metrics.csv
# and config) plus the JSON and Markdown tables.
#   DEVICES="1 2" EPOCHS=3 bash benchmarks/gpu/ddp_scaling.sh --workloads acac_b5       # throughput
#   MODE=equal-steps GLOBAL_BATCH=10 EPOCHS=6 bash benchmarks/gpu/ddp_scaling.sh --workloads acac_b5
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
OUT="${OUT:-$PWD/ddp-out}"
out="$PWD/ddp-runs"
mkdir -p "$out" "$OUT"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
nvidia-smi topo -m 2>/dev/null | head -5 || true
python3 -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__, "gpus", torch.cuda.device_count())'
python3 benchmarks/studies/ddp_scaling.py --devices ${DEVICES:-1 2} --epochs "${EPOCHS:-4}" \
    --mode "${MODE:-throughput}" --global-batch "${GLOBAL_BATCH:-10}" --out "$out" "$@" 2>&1 \
    | tee -a "$out/log.txt"
status="${PIPESTATUS[0]}"
cp "$out"/ddp_scaling_*.json "$out"/ddp_scaling_*.md "$OUT"/ 2>/dev/null
tar czf "$OUT/ddp.tar.gz" --exclude='*.ckpt' -C "$out" .
exit "$status"
