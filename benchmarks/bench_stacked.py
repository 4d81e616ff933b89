"""Many runs at once: a stack of K runs (lifelong.training.stacked) against the same K runs one after another.

The K runs are one strategy's seeds 0..K-1 on Split-FashionMNIST (Split-Digits with --quick), in this process,
one thread. A: `train_together` (forward and backward passes batched with torch.func.vmap); B: the K engines
run one by one. Runs alternate (A, B, A, B, ...) so both see the same machine load; medians of the wall times;
ratio = stacked / one by one (below 1: the stack is faster). Also printed: the largest difference in final
accuracy between a member and its run alone (float rounding, see the module docstring).

On a CPU the batched product costs what K products cost and vmap adds overhead, so expect a ratio at or above
1; on a GPU (`--device cuda`), where small models are bound by kernel launches, the stack's K-fold fewer
launches are the point.

    python benchmarks/bench_stacked.py [--stacks 4,8] [--strategies naive,er] [--repeats 3] [--quick]
                                       [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifelong.training import runner  # noqa: E402
from lifelong.training.config import RunConfig  # noqa: E402
from lifelong.training.engine import Engine  # noqa: E402
from lifelong.training.stacked import train_together  # noqa: E402


def configs(strategy: str, k: int, scenario: str, device: str) -> list[RunConfig]:
    return [RunConfig.from_dict({"scenario": scenario, "strategy": strategy, "seed": s, "threads": 1,
                                 "device": device}) for s in range(k)]


def stacked(cfgs: list[RunConfig]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    outcomes = train_together([lambda c=c: Engine(c) for c in cfgs], runner.execute)
    seconds = time.perf_counter() - start
    for o in outcomes:
        if isinstance(o, BaseException):
            raise o
    return seconds, [o["final_accuracy"] for o in outcomes]


def one_by_one(cfgs: list[RunConfig]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    results = [runner.execute(Engine(c)) for c in cfgs]
    return time.perf_counter() - start, [r["final_accuracy"] for r in results]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", default="4,8", help="stack sizes K [4,8]")
    ap.add_argument("--strategies", default="naive,er", help="strategies [naive,er]")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats per setting [3]")
    ap.add_argument("--quick", action="store_true", help="Split-Digits instead of Split-FashionMNIST")
    ap.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scenario = "split-digits" if args.quick else "split-fashion-mnist"
    runner.execute(Engine(configs("naive", 1, scenario, args.device)[0]))  # data loaded, caches warm
    print(f"{scenario}, {args.device}, 1 thread, medians of {args.repeats} alternating repeats")
    print(f"{'strategy':8} {'K':>3} {'one by one s':>13} {'stacked s':>10} {'ratio':>6} {'max |acc diff|':>15}")
    for strategy in args.strategies.split(","):
        for k in (int(s) for s in args.stacks.split(",")):
            cfgs = configs(strategy, k, scenario, args.device)
            a, b, diff = [], [], 0.0
            for _ in range(args.repeats):
                ta, acc_a = stacked(cfgs)
                tb, acc_b = one_by_one(cfgs)
                a.append(ta)
                b.append(tb)
                diff = max(diff, *(abs(x - y) for x, y in zip(acc_a, acc_b, strict=True)))
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"{strategy:8} {k:3d} {mb:13.2f} {ma:10.2f} {ma / mb:6.2f} {100 * diff:14.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
