#!/usr/bin/env bash
# Download, here (with network), every wheel the benchmark needs on the GPU machine that its
# image lacks, for CPython 3.12 on manylinux x86-64 (the machine has no network). Usage, from
# anywhere in the repo:  bash benchmarks/gpu/fetch_wheels.sh [base|cueq|all]
#
#   .whl/base/        macelab's and mace-torch's dependencies the image lacks (~6.5 MiB)
#   .whl/cueq/        NVIDIA cuEquivariance for torch on CUDA 13 (~71 MiB of wheels: more than
#                     one device call carries, so it is not carried as such), and from it:
#   .whl/cueq-xz/     the same packages unpacked and xz-compressed (~26 MiB): carried in the
#                     same call as base (install.sh cueq unpacks it)
#   .whl/cueq-ops/    the 43 MiB ops wheel alone, and
#   .whl/cueq-torch/  the other three (28 MiB): the two-call fallback (install.sh cueq-ops,
#                     then cueq-torch in the next call while the machine is warm)
# All are ignored through .git/info/exclude (/.whl/). Versions are the ones tested in the CPU
# venv; the image already has torch, numpy, scipy, sympy, pandas, matplotlib, h5py, pyyaml,
# tqdm, torchmetrics, torch-geometric, lightning, opt-einsum, networkx, nvidia-cublas and
# nvidia-ml-py (KINDS.md, "Python packages already there").
set -euo pipefail
group="${1:-all}"
root="$(git rev-parse --show-toplevel)"
cd "$root"
PY="${PYTHON:-python3}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64
    --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" \
    -e "Could not find a version" -e "No matching distribution" || true; }
download() {  # download DEST SPEC...: one wheel per spec, built here if PyPI has only an sdist
    local dest="$1" spec name stem
    shift
    for spec in "$@"; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" \
            -d "$dest" "$spec" 2>&1 | quiet || true  # a missing binary is handled below
        name="${spec%%[=<>]*}"
        stem="$(echo "${name//-/_}" | tr '[:upper:]' '[:lower:]')"
        if ! ls "$dest" | tr '[:upper:]' '[:lower:]' | grep -q "^${stem}-.*\.whl$"; then
            # No binary on PyPI (antlr4-python3-runtime 4.9.x, python-hostlist): both are pure
            # Python, so a wheel built here installs there.
            echo "building a wheel for $spec (PyPI has an sdist only)" >&2
            "$PY" -m pip wheel -q --no-deps "$spec" -w "$dest" 2>&1 | quiet
        fi
    done
}

BASE=(
    # macelab
    hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 ase==3.29.0 vesin==0.6.2
    # mace-torch and what it requires that the image lacks
    mace-torch==0.3.16 e3nn==0.4.4 opt-einsum-fx==0.1.4 torch-ema==0.3 matscipy==1.3.1
    prettytable==3.18.0 wcwidth==0.9.4 configargparse==1.9.0 python-hostlist==2.3.0
    gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 lmdb==3.0.0 orjson==3.13.0
)
CUEQ=(
    cuequivariance==0.13.0 cuequivariance-torch==0.13.0 cuequivariance-ops-torch-cu13==0.13.0
    cuequivariance-ops-cu13==0.13.0 platformdirs==4.5.1
)

if [[ "$group" == base || "$group" == all ]]; then
    mkdir -p .whl/base
    download .whl/base "${BASE[@]}"
fi
if [[ "$group" == cueq || "$group" == all ]]; then
    mkdir -p .whl/cueq .whl/cueq-ops .whl/cueq-torch .whl/cueq-xz
    download .whl/cueq "${CUEQ[@]}"
    for wheel in .whl/cueq/*.whl; do
        case "$(basename "$wheel")" in
            cuequivariance_ops_cu13-*) ln -f "$wheel" .whl/cueq-ops/ ;;
            *) ln -f "$wheel" .whl/cueq-torch/ ;;
        esac
    done
    archive=.whl/cueq-xz/cueq-site-0.13.0-cp312.tar.xz
    if [[ ! -s "$archive" ]]; then
        # A wheel without a .data folder installs by unzipping; all four are such wheels.
        work="$(mktemp -d)"
        for wheel in .whl/cueq/*.whl; do
            "$PY" -m zipfile -e "$wheel" "$work/site"
        done
        echo "compressing the unpacked cuEquivariance packages (xz -9, a few minutes)" >&2
        tar -C "$work" -cf - site | xz -9 -T0 > "$archive.part"
        mv "$archive.part" "$archive"
        rm -rf "$work"
    fi
fi
du -sh .whl/* 2>/dev/null
