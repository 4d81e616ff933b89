#!/usr/bin/env bash
# The main job: compare naive, EWC, LwF, ER, DER++ and joint training on Split-FashionMNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lifelong compare --scenario split-fashion-mnist --strategies naive,ewc,lwf,er,derpp,joint --seeds 0 "$@"
