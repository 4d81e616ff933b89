"""Time `lifelong` against a bare PyTorch loop on Split-FashionMNIST (naive and ER-500), one thread.

Runs alternate (A, B, A, B, ...) so both see the same machine load; prints medians and ratios.
    python benchmarks/bench_core.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import bare_run, normalised  # noqa: E402

from lifelong.data.datasets import load_dataset  # noqa: E402
from lifelong.training import runner  # noqa: E402
from lifelong.training.config import RunConfig  # noqa: E402
from lifelong.training.engine import Engine  # noqa: E402


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def engine_run(cfg, data):
    return Engine(cfg, dataset=data).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    x_all, test_x = normalised(data)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for strategy in ("naive", "er"):
        cfg = RunConfig(strategy=strategy)
        times = {"bare loop": [], "lifelong engine": [], "lifelong run (store+checkpoints)": []}
        accs = {k: None for k in times}
        for r in range(args.repeats):
            t, accs["bare loop"] = timed(bare_run, data, x_all, test_x, replay=strategy == "er", seed=r)
            times["bare loop"].append(t)
            t, res = timed(engine_run, cfg.with_overrides(seed=r), data)
            times["lifelong engine"].append(t)
            accs["lifelong engine"] = res["final_accuracy"]
            t, res = timed(runner.run, cfg.with_overrides(seed=r), tmp / f"{strategy}-{r}", dataset=data)
            times["lifelong run (store+checkpoints)"].append(t)
            accs["lifelong run (store+checkpoints)"] = res["final_accuracy"]
        base = statistics.median(times["bare loop"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append((strategy, name, med, med / base, accs[name]))
    print(f"Split-FashionMNIST, 1 thread, median of {args.repeats} alternating repeats (includes evaluation "
          "after each experience; excludes reading the dataset; the bare loop's inputs are normalised to float "
          "once, outside its timing)")
    print(f"{'strategy':8} {'implementation':34} {'median s':>9} {'ratio':>6} {'final acc (last repeat)':>24}")
    for strategy, name, med, ratio, acc in rows:
        print(f"{strategy:8} {name:34} {med:9.2f} {ratio:6.2f} {acc:24.3f}")


if __name__ == "__main__":
    main()
