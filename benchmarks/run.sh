#!/usr/bin/env bash
# Benchmarks: lifelong vs a bare PyTorch loop doing the same algorithm (naive, ER, DER++, EWC, LwF; in-process and
# whole process); vs Avalanche with --avalanche (builds its own venv). Other arguments go to bench_speed.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
args=()
for a in "$@"; do [[ $a == --avalanche ]] || args+=("$a"); done
.venv/bin/python benchmarks/bench_speed.py ${args[@]+"${args[@]}"}
if [[ " $* " == *" --avalanche "* ]]; then
  bash benchmarks/avalanche/run.sh
fi
