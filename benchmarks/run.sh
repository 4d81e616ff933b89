#!/usr/bin/env bash
# Benchmarks: lifelong vs a bare PyTorch loop (always); vs Avalanche with --avalanche (builds its own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/bench_core.py "${@/--avalanche/}"
if [[ " $* " == *" --avalanche "* ]]; then
  bash benchmarks/avalanche/run.sh
fi
