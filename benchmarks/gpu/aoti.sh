#!/usr/bin/env bash
# On the GPU machine, from the repo root: the AOTInductor package of the paper-size model
# beside the eager model and the Python compiled path (benchmarks/studies/aoti.py), float64 and
# float32, on a 27-atom molecule and a 576-atom water box. Carry .whl/base (torch of the GPU
# machine, 2.11 when written; a package runs only with the torch that compiled it). Extra
# arguments go to the script. Results in $OUT/${NAME:-aoti} (JSON + Markdown + log).
# Not yet run: no numbers from it are in the docs.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/aoti-out}/${NAME:-aoti}"
mkdir -p "$out"
python3 -m benchmarks.studies.aoti --device cuda --out "$out" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
