"""Overhead of continual evaluation: ER-500 on Split-FashionMNIST with evaluation every K steps on N-sample
subsets per seen experience, against the same run without it. Alternating repeats, medians, one thread.
    python benchmarks/bench_continual_eval.py [--every 10] [--subsample 500] [--repeats 3]
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
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--subsample", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategy", default="er")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    base = RunConfig(strategy=args.strategy)
    variants = {
        "without continual evaluation": base,
        "with, on a background thread": base.with_overrides(eval_every=args.every, eval_subsample=args.subsample),
        "with, inline": base.with_overrides(eval_every=args.every, eval_subsample=args.subsample,
                                            eval_background=False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    evaluations = 0
    for _ in range(args.repeats):
        for name, cfg in variants.items():
            engine = Engine(cfg, dataset=data)
            t = time.perf_counter()
            engine.run()
            times[name].append(time.perf_counter() - t)
            evaluations = len(engine.curve_steps) or evaluations
    base_time = statistics.median(times["without continual evaluation"])
    print(f"{args.strategy} on Split-FashionMNIST, eval every {args.every} steps on {args.subsample} samples per "
          f"seen experience ({evaluations} evaluations), median of {args.repeats} alternating repeats, 1 thread:")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:30} {t:6.2f} s   ratio {t / base_time:.2f}x")


if __name__ == "__main__":
    main()
