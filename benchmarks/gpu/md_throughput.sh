#!/usr/bin/env bash
# On the GPU machine, from the repo root: MD throughput (benchmarks/studies/md_throughput.py), macelab's
# calculator in every precision beside mace-torch's (e3nn, and cuEquivariance when .whl/cueq-xz
# is carried). Carry .whl/base (and .whl/cueq-xz). Extra arguments go to the script.
# Results in $OUT/${NAME:-md} (JSON + Markdown).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
eval "$(bash benchmarks/gpu/install.sh base)" || { echo "carry .whl/base" >&2; exit 1; }
if compgen -G ".whl/cueq-xz/*.tar.xz" >/dev/null; then
    eval "$(bash benchmarks/gpu/install.sh cueq)" || echo "cuEquivariance did not install" >&2
fi
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
out="${OUT:-$PWD/md-out}/${NAME:-md}"
mkdir -p "$out"
python3 -m benchmarks.studies.md_throughput --device cuda --out "$out" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
