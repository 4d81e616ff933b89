#!/usr/bin/env bash
# Build a separate venv with avalanche-lib (torch 2.14.1 + torchvision 0.29.1, which pip takes from local disk
# here) and time Avalanche against lifelong on the same Split-FashionMNIST runs. Never run by CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.bench-venvs/avalanche
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import avalanche" 2>/dev/null; then
  echo "avalanche benchmark: building $VENV (several GB, a few minutes)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/pip" install -q "avalanche-lib==0.6.0"
fi
export OMP_NUM_THREADS=1
exec .venv/bin/python benchmarks/avalanche/compare.py --avalanche-python "$VENV/bin/python" "$@"
