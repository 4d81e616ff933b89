"""oneDNN's linear layers (lifelong.training.kernels) against torch's own kernel (MKL on x86), one thread.

Part 1, products alone: for each layer shape and row count, the time of torch's `F.linear` forward + backward
against `OneDNNLinear` (ratio < 1: oneDNN faster), and the forward alone at evaluation size. Part 2, in a step:
SGD steps of the default MLP (784-256-256-10, fused SGD) with every large linear layer on oneDNN against
torch's kernel, in interleaved blocks of 20 steps (a product alone flatters oneDNN: its weights stay in cache;
in a step they do not, and its fixed cost per call is larger), which sets MIN_ROWS. Part 3, runs: whole
`Engine(cfg).run()` on Split-FashionMNIST with `linear_kernel="auto"` against `"torch"`, alternating, medians.

    python benchmarks/bench_kernels.py [--repeats 5] [--strategies naive,er,derpp,lwf] [--core 0] [--no-runs]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.training import kernels
from lifelong.training.kernels import MIN_MACS, MIN_ROWS, OneDNNLinear, onednn_available

SHAPES = ((784, 256), (256, 256), (256, 10), (512, 512), (768, 3072))
ROWS = (8, 32, 64, 256)


def per_call(fn, *args, budget: float = 0.05, rounds: int = 5) -> float:
    """Median seconds per call of `fn(*args)` over `rounds` rounds of about `budget` seconds each."""
    for _ in range(10):
        fn(*args)
    t = time.perf_counter()
    fn(*args)
    n = max(10, int(budget / max(time.perf_counter() - t, 1e-7)))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def forward_backward(linear, x, w, b, g) -> None:
    linear(x, w, b).backward(g)


def products() -> None:
    print(f"fwd+bwd time oneDNN / torch by shape (in x out) and rows, products alone; * = routed to oneDNN (>= "
          f"{MIN_ROWS} rows and >= {MIN_MACS} multiply-adds); last column: forward of 4096 rows (evaluation)")
    print(f"{'in x out':>11}" + "".join(f"{r:>9}" for r in ROWS) + f"{'eval':>9}")
    for k, n in SHAPES:
        cells = []
        for rows in ROWS:
            x = torch.randn(rows, k, requires_grad=True)
            w = torch.randn(n, k, requires_grad=True)
            b = torch.randn(n, requires_grad=True)
            g = torch.randn(rows, n)
            plain = per_call(forward_backward, F.linear, x, w, b, g)
            fast = per_call(forward_backward, OneDNNLinear.apply, x, w, b, g)
            routed = rows >= MIN_ROWS and rows * k * n >= MIN_MACS
            cells.append(f"{fast / plain:8.2f}{'*' if routed else ' '}")
        x = torch.randn(4096, k)
        w, b = torch.randn(n, k), torch.randn(n)
        with torch.inference_mode():
            plain = per_call(F.linear, x, w, b)
            fast = per_call(OneDNNLinear.apply, x, w, b)
        cells.append(f"{fast / plain:8.2f}*")
        print(f"{f'{k} x {n}':>11}" + "".join(cells))


def steps(rows_list: tuple[int, ...] = (32, 64, 128), blocks: int = 30, block: int = 20) -> None:
    print(f"\nSGD steps of the MLP 784-256-256-10, every large layer on oneDNN / torch's kernel, {blocks} "
          f"interleaved blocks of {block} steps (routed by the library from {MIN_ROWS} rows on)")
    data = torch.randn(block * blocks * max(rows_list), 784)
    labels = torch.randint(0, 10, (len(data),))
    saved = kernels.MIN_ROWS
    kernels.MIN_ROWS = 1  # route every large product, whatever its rows, to measure them
    try:
        for rows in rows_list:
            runs_ = {}
            for kind in ("torch", "onednn"):
                torch.manual_seed(0)
                net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                    nn.Linear(256, 10))
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, fused=True)
                runs_[kind] = (net, opt, kernels._OneDNNLinearMode if kind == "onednn" else contextlib.nullcontext)
            total = {k: 0.0 for k in runs_}
            for b in range(blocks):
                for kind, (net, opt, mode) in runs_.items():
                    t = time.perf_counter()
                    for i in range(block):
                        lo = (b * block + i) * rows
                        with mode():
                            out = net(data[lo:lo + rows])
                        loss = F.cross_entropy(out, labels[lo:lo + rows])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                    total[kind] += time.perf_counter() - t
            step = {k: v / (blocks * block) * 1e6 for k, v in total.items()}
            print(f"  {rows:4} rows: torch {step['torch']:6.0f} us/step, oneDNN {step['onednn']:6.0f} us/step, "
                  f"ratio {total['onednn'] / total['torch']:.2f}", flush=True)
    finally:
        kernels.MIN_ROWS = saved


def runs(strategies: list[str], repeats: int) -> None:
    from lifelong.data.datasets import load_dataset
    from lifelong.training.config import RunConfig
    from lifelong.training.engine import Engine

    data = load_dataset("fashion-mnist")
    print(f"\nSplit-FashionMNIST, MLP 784-256-256-10, batch 32, one run = Engine(cfg).run(); median of {repeats} "
          "alternating repeats")
    print(f"{'strategy':9}{'torch s':>9}{'auto s':>8}{'ratio':>7}{'paired':>8}   final acc torch / auto")
    for strategy in strategies:
        t: dict[str, list[float]] = {"torch": [], "auto": []}
        acc = {}
        for r in range(repeats):
            for kernel in t:
                cfg = RunConfig(scenario="split-fashion-mnist", strategy=strategy, threads=1, seed=r,
                                linear_kernel=kernel)
                start = time.perf_counter()
                acc[kernel] = Engine(cfg, dataset=data).run()["final_accuracy"]
                t[kernel].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in t.items()}
        paired = statistics.median(a / b for a, b in zip(t["auto"], t["torch"], strict=True))
        print(f"{strategy:9}{med['torch']:9.2f}{med['auto']:8.2f}{med['auto'] / med['torch']:7.2f}{paired:8.2f}   "
              f"{acc['torch']:.3f} / {acc['auto']:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--strategies", default="naive,er,derpp,lwf")
    ap.add_argument("--core", type=int, default=0, help="CPU core the benchmark is pinned to [0]")
    ap.add_argument("--no-runs", action="store_true", help="only the per-shape products")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    if not onednn_available():
        raise SystemExit("oneDNN's linear operator is not in this torch build (or the CPU is not x86-64)")
    torch.manual_seed(0)
    products()
    steps()
    if not args.no_runs:
        runs([s.strip() for s in args.strategies.split(",") if s.strip()], args.repeats)


if __name__ == "__main__":
    main()
