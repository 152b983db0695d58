#!/usr/bin/env bash
# On the GPU machine (no network): install one carried group offline into /tmp/site-<group>
# and print, on stdout, the line that puts it on PYTHONPATH. From the repo root:
#   eval "$(bash benchmarks/gpu/install.sh base)"     # .whl/base/*.whl
#   eval "$(bash benchmarks/gpu/install.sh cueq)"     # .whl/cueq-xz/*.tar.xz, or whatever of
#                                                     # .whl/cueq-ops, .whl/cueq-torch is here
# cueq-ops and cueq-torch (the two-call fallback) install into the same /tmp/site-cueq.
set -euo pipefail
group="${1:?usage: install.sh base|cueq|cueq-ops|cueq-torch}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
pip_install() {  # pip_install TARGET WHEEL...
    local target="$1"
    shift
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$target" "$@" >&2
}
case "$group" in
    base)
        target=/tmp/site-base
        pip_install "$target" "$root"/.whl/base/*.whl
        ;;
    cueq | cueq-ops | cueq-torch)
        target=/tmp/site-cueq
        archives=("$root"/.whl/cueq-xz/*.tar.xz)
        if [[ "$group" == cueq && -f "${archives[0]}" ]]; then
            mkdir -p /tmp/unpack-cueq
            "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
                "${archives[0]}" /tmp/unpack-cueq >&2
            rm -rf "$target"
            mv /tmp/unpack-cueq/site "$target"
        else
            folders=("$group")
            [[ "$group" == cueq ]] && folders=(cueq-ops cueq-torch)
            for folder in "${folders[@]}"; do
                if compgen -G "$root/.whl/$folder/*.whl" >/dev/null; then
                    pip_install "$target" "$root"/.whl/"$folder"/*.whl
                fi
            done
        fi
        [[ -d "$target" ]] || { echo "nothing to install for $group" >&2; exit 1; }
        ;;
    *)
        echo "unknown group $group (base, cueq, cueq-ops, cueq-torch)" >&2
        exit 2
        ;;
esac
echo "export PYTHONPATH=$target\${PYTHONPATH:+:\$PYTHONPATH}"
