#!/usr/bin/env bash
# Run the test suite (installs what it needs first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
LIFELONG_EXTRA_APT="chromium" bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# two worker processes (CI and the target machines have 2 cores); LIFELONG_TEST_WORKERS=0 runs in one process
exec .venv/bin/python -m pytest -p no:cacheprovider -n "${LIFELONG_TEST_WORKERS:-2}" "$@"
