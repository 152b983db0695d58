#!/usr/bin/env bash
# The one command for the GPU machine, from the repo root: install the carried wheels, run the
# whole harness, and leave results.json, results.md, run_info.json and log.txt in $OUT/bench
# (./bench-out/bench without $OUT). Extra arguments go to benchmarks/run.py (--suite train,
# --paths ..., --budget-s ...). Reads the carried paths .whl/base (required), .whl/cueq-xz or
# .whl/cueq-torch (optional; cuEquivariance) and .gpu/data (optional; 3BPA molecules).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYTHONUNBUFFERED=1
out="${OUT:-$PWD/bench-out}/bench"
mkdir -p "$out"
install() {  # install GROUP: put it on PYTHONPATH, or return non-zero
    local line
    line="$(bash benchmarks/gpu/install.sh "$1")" || return 1
    eval "$line"
}
install base || { echo "the base wheels did not install: carry .whl/base" >&2; exit 1; }
if compgen -G ".whl/cueq-xz/*.tar.xz" >/dev/null; then
    install cueq || echo "cuEquivariance did not install (see above)" >&2
elif compgen -G ".whl/cueq-torch/*.whl" >/dev/null && [[ -d /tmp/site-cueq ]]; then
    install cueq-torch || echo "cuEquivariance did not install (see above)" >&2
elif [[ -d /tmp/site-cueq ]]; then
    export PYTHONPATH="/tmp/site-cueq:$PYTHONPATH"
else
    echo "no cuEquivariance carried (.whl/cueq-xz) or installed (/tmp/site-cueq)" >&2
fi
export PYTHONPATH="$PWD/src:$PWD:$PYTHONPATH"
# The CUDA libraries of the image's torch wheels (libnvrtc.so.13 for cuEquivariance's ops).
nvlibs="$(python3 -c 'import glob, os, site
print(":".join(sorted({d for s in site.getsitepackages()
    for d in glob.glob(os.path.join(s, "nvidia", "**", "lib"), recursive=True)})))' 2>/dev/null)"
if [[ -n "$nvlibs" ]]; then
    export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [[ -z "${MACELAB_DATA:-}" && -d .gpu/data ]]; then
    export MACELAB_DATA="$PWD/.gpu/data"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
python3 -c 'import macelab, torch, e3nn, mace; print("torch", torch.__version__, "e3nn", e3nn.__version__,
"mace", mace.__version__)' 2>&1 | tail -1
python3 benchmarks/run.py --suite all --out "$out" --budget-s "${BUDGET_S:-450}" "$@" 2>&1 \
    | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
