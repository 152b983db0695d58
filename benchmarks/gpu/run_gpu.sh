#!/usr/bin/env bash
# The one command for the GPU machine, from the repo root: install the carried wheels, run the
# whole harness, and leave results.json, results.md, run_info.json and log.txt in $OUT/bench
# (or ./bench-out without $OUT). Extra arguments go to benchmarks/run.py, e.g. --suite train.
# Carried paths it reads: .whl/base, .whl/cueq-xz (optional), .gpu/data (3BPA, optional).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
out="${OUT:-$PWD/bench-out}/bench"
mkdir -p "$out"
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "base wheels did not install" >&2; exit 1; }
if compgen -G ".whl/cueq-xz/*.tar.xz" >/dev/null || [[ -d /tmp/site-cueq ]]; then
    if [[ -d /tmp/site-cueq && ! -e .whl/cueq-xz ]]; then
        export PYTHONPATH="/tmp/site-cueq${PYTHONPATH:+:$PYTHONPATH}"
    else
        eval "$(bash benchmarks/gpu/install.sh cueq)" || echo "cuEquivariance did not install" >&2
    fi
else
    echo "no cuEquivariance carried (.whl/cueq-xz) or installed (/tmp/site-cueq)" >&2
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${MACELAB_DATA:-}" && -d .gpu/data ]]; then
    export MACELAB_DATA="$PWD/.gpu/data"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, e3nn, mace; print('torch', torch.__version__, 'e3nn', e3nn.__version__, 'mace', mace.__version__)" 2>&1 | tail -1
python3 benchmarks/run.py --suite all --out "$out" --budget-s "${BUDGET_S:-450}" "$@" 2>&1 \
    | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
