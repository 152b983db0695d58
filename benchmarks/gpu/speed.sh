#!/usr/bin/env bash
# On the GPU machine, from the repo root: the GPU tests of macelab.speed (CUDA graphs match
# the eager model), then the harness on the speed-relevant paths. Carry .whl/base,
# .whl/cueq-xz (optional), .whl/test (pytest wheels) and .gpu (data). Extra arguments go to
# benchmarks/run.py. Results in $OUT/bench (harness) and $OUT/pytest.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
out="${OUT:-$PWD/bench-out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target /tmp/site-test .whl/test/*.whl >&2
(
    eval "$(bash benchmarks/gpu/install.sh base)"
    export PYTHONPATH="/tmp/site-test:$PWD/src:$PWD:$PYTHONPATH"
    export MACELAB_DATA="$PWD/.gpu/data"
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/speed 2>&1 | tail -20 | tee "$out/pytest.txt"
)
bash benchmarks/gpu/run_gpu.sh "$@"
