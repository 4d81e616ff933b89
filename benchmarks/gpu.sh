#!/usr/bin/env bash
# The GPU figures of issues 14 and 15 in one call of a lent GPU machine (about 8 minutes of its time):
# bench_speed on CUDA (lifelong against the bare loop, in-process) and bench_stacked on CUDA (K runs at once
# against one by one). Run from the repository root on the GPU machine, whose python3 holds a CUDA PyTorch.
#
# That machine has no Fashion-MNIST: carry the IDX files. Here, once:
#   echo /.data/ >> .git/info/exclude
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# then call the device tool's `run` with command "bash benchmarks/gpu.sh", carry [".data"], timeout_s 560.
# Each benchmark's output is also written to $OUT (speed.txt, stacked.txt) when $OUT is set; PYTHON names
# another interpreter [python3]. Not yet run on a GPU (none was lent when it was written).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" LIFELONG_DATA="${LIFELONG_DATA:-$PWD/.data}"
out="${OUT:-/tmp}"
"${PYTHON:-python3}" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'
print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))" || exit 1
nvidia-smi --query-gpu=name,clocks.sm,utilization.gpu --format=csv,noheader || true
timeout 300 "${PYTHON:-python3}" benchmarks/bench_speed.py --device cuda --repeats 3 --no-process 2>&1 | tee "$out/speed.txt"
timeout 200 "${PYTHON:-python3}" benchmarks/bench_stacked.py --device cuda --stacks 4,8 --repeats 2 2>&1 | tee "$out/stacked.txt"
