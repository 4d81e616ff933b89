"""The zoo's slow methods against ER, in one process: each method's training time relative to ER's, next to what
its algorithm must add to an ER step (estimated from profiles: benchmarks/RESULTS.md, "The zoo against ER").

Each method runs `Engine(RunConfig(scenario=..., strategy=NAME, checkpoint_every=0), dataset=data).run()` with the
library's defaults, alternating with ER (ER, method, ER, method, ...) so both see the same machine load; one
thread, pinned to one core; the dataset is loaded once. Ratio = median(method) / median(ER).

    python benchmarks/bench_zoo.py [--methods gss,onpro,mir] [--repeats 3] [--scenario split-fashion-mnist]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lifelong.data.datasets import load_dataset
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine

# What each algorithm adds to ER's step (new batch 32 + replay 32 = 64 rows, one forward/backward), with the
# library's defaults on the MLP 784-256-256-10 (P = 269,322 parameters).
MUST = {
    "gss": "per step: per-sample gradients of 10 memory samples (10 x P floats, flattened and normalised) and one "
           "new-batch gradient at the updated weights; the 32 new samples' per-sample gradients while the memory "
           "fills or the gate opens",
    "onpro": "160 rows per step (new, memory, their views, mixed replay) = 2.5x ER's forward/backward; projection "
             "head; 3 affine-resampled views; SupCon x2 and OPE x2",
    "gem": "one gradient per past experience's memory and a quadratic program per step",
    "mir": "one virtual forward/backward on the new batch and 2 forwards over 50 candidates (~1.3 ER steps)",
    "refresh": "an unlearn forward/backward on the new batch, N(0, I) noise over all P parameters and a per-tensor "
               "norm-rescaled update per step; 200 per-sample gradients (Fisher) per experience",
    "scr": "128 rows per step (new + memory and their views) = 2x ER's forward/backward, projection head, "
           "affine-resampled views, SupCon over 128 rows; NCM means from the memory at each evaluation",
    "prd": "extra views, prototype and relation-distillation terms per step",
    "agem": "a forward/backward over a 256-row memory batch per step (4x ER's 64 rows) and the projection",
    "bic": "a teacher forward over 64 rows per step; herding and 250 epochs of the 2-parameter bias stage per "
           "experience",
    "lucir": "a teacher forward (features) over 64 rows per step, the cosine head and margin ranking; herding and "
             "class-mean head initialisation per experience",
    "view-batch": "128 rows per step (every sample and one view) = 2x ER's forward/backward, the views' "
                  "translation/flip gather and the one-to-many KL",
}
DEFAULT = "gss,onpro,gem,mir,refresh,scr,prd,agem,bic,lucir,view-batch"


def timed_run(cfg: RunConfig, data) -> float:
    t = time.perf_counter()
    Engine(cfg, dataset=data).run()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenario", default="split-fashion-mnist")
    ap.add_argument("--dataset", default="fashion-mnist", help="the scenario's dataset, loaded once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--core", type=int, default=0, help="CPU core every run is pinned to [0]")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    data = load_dataset(args.dataset)

    def config(strategy: str) -> RunConfig:
        return RunConfig(scenario=args.scenario, strategy=strategy, checkpoint_every=0, seed=args.seed)

    timed_run(config("er"), data)  # warm-up: first-use costs are not ER's
    print(f"{'method':<11} {'ER s':>6} {'method s':>9} {'ratio':>6}  what its algorithm must add")
    for name in methods:
        er_t, m_t = [], []
        for _ in range(args.repeats):
            er_t.append(timed_run(config("er"), data))
            m_t.append(timed_run(config(name), data))
        er, m = statistics.median(er_t), statistics.median(m_t)
        print(f"{name:<11} {er:6.2f} {m:9.2f} {m / er:5.2f}x  {MUST.get(name, '')}", flush=True)


if __name__ == "__main__":
    main()
