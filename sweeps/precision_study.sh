#!/usr/bin/env bash
# The precision study (issue 28; docs/study.md) in one command, on one machine with GPUs:
#
#   bash sweeps/precision_study.sh budget        # item 2: every precision, equal wall clock
#   bash sweeps/precision_study.sh stages        # item 3: one stage group in bf16 / fp16
#   bash sweeps/precision_study.sh experiments   # item 5: progressive order, embeddings
#
# Each part's recipes (benchmarks/studies/precision_study.py) train side by side, one per
# GPU round-robin, for MAX_TIME each (default 20 minutes), through
# benchmarks/gpu/reproduce_acac.sh; then every run is tested, its equivariance measured, and
# the runs are collected into one results file, whose table is printed:
#   benchmarks/results/<date>_precision_study_<part>.json
# Draw the figures with notebooks/precision_study.ipynb (study_file=that file). Runs live in
# ROOT (default /tmp/macelab-runs/<part>); a part interrupted midway goes on with
# `bash benchmarks/gpu/reproduce_acac.sh resume` (same ROOT).
set -euo pipefail
part="${1:?usage: precision_study.sh budget|stages|experiments}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export ROOT="${ROOT:-/tmp/macelab-runs/$part}" MAX_TIME="${MAX_TIME:-00:00:20:00}"
RECIPES="$(python3 benchmarks/studies/precision_study.py recipes --part "$part")"
export RECIPES
bash benchmarks/gpu/reproduce_acac.sh start
WAIT_S=$((10 * 24 * 3600)) bash benchmarks/gpu/reproduce_acac.sh finish
out="benchmarks/results/$(date +%Y-%m-%d)_precision_study_$part.json"
python3 benchmarks/studies/precision_study.py collect "$ROOT" --out "$out"
echo "results: $out"
