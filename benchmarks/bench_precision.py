"""Mixed precision on this CPU: fp32 vs bf16-mixed on Split-FashionMNIST (naive and ER), 1 thread.

Runs alternate (fp32, bf16, fp32, bf16, ...) so both see the same machine load; prints medians, the ratio and
the final accuracy of each.
    python benchmarks/bench_precision.py [--repeats 3] [--model mlp|cnn]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lifelong.data.datasets import load_dataset
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="mlp")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    print(f"Split-FashionMNIST, model {args.model}, 1 thread, median of {args.repeats} alternating repeats")
    print(f"{'strategy':8} {'precision':11} {'median s':>9} {'ratio':>6} {'final acc':>10}")
    for strategy in ("naive", "er"):
        times: dict[str, list[float]] = {"32": [], "bf16-mixed": []}
        accs: dict[str, float] = {}
        for r in range(args.repeats):
            for precision in times:
                cfg = RunConfig(strategy=strategy, model=args.model, precision=precision, seed=r, threads=1,
                                checkpoint_every=0)
                t = time.perf_counter()
                accs[precision] = Engine(cfg, dataset=data).run()["final_accuracy"]
                times[precision].append(time.perf_counter() - t)
        base = statistics.median(times["32"])
        for precision, ts in times.items():
            med = statistics.median(ts)
            print(f"{strategy:8} {precision:11} {med:9.2f} {med / base:6.2f} {100 * accs[precision]:9.1f}%")


if __name__ == "__main__":
    main()
