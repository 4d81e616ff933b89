"""lifelong against a bare PyTorch loop doing the same algorithm (benchmarks/bare_loop.py), in-process and as a
whole process, for naive, ER, DER++, EWC and LwF on Split-FashionMNIST; one thread, pinned to one core.

In-process: `Engine(cfg, dataset=data).run()` against `bare_run(...)` in this process (dataset loaded once; the
bare loop's inputs are normalised to float once, outside its timing). Whole process: a subprocess running
`python -m lifelong run ...` (imports, data loading, run store, checkpoints) against one running
`python benchmarks/bare_loop.py --strategy ...` (imports, data loading, normalisation, training). Runs alternate
(A, B, A, B, ...) so both see the same machine load; medians; ratio = lifelong / bare loop. In-process, a third
run in each round is the bare loop with torch's fused SGD step (`fused=True`, the step lifelong takes by default):
"vs fused" is lifelong / that loop, the engine's cost over the best loop a user writes by hand. "paired" is the
median over rounds of each round's own ratio, which cancels load that drifts between rounds.

    python benchmarks/bench_speed.py [--repeats 3] [--strategies naive,er,derpp,ewc,lwf] [--core 0] [--foreach]
                                     [--device cuda]

`--foreach` times lifelong with `optimizer_params="foreach=True"` (torch's multi-tensor SGD step, bit-identical to
the single-tensor one, instead of the default fused step; see lifelong.training.learner.make_optimizer).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bare_loop import bare_run, normalised  # noqa: E402

from lifelong.data.datasets import load_dataset  # noqa: E402
from lifelong.training.config import RunConfig  # noqa: E402
from lifelong.training.engine import Engine  # noqa: E402

# the same hyperparameters on both sides, explicit (defaults may be retuned)
HPARAMS = {
    "naive": {},
    "er": {"buffer_size": 500, "replay_batch_size": 32},
    "derpp": {"buffer_size": 500, "replay_batch_size": 32, "alpha": 0.1, "beta": 0.5},
    "ewc": {"ewc_lambda": 1000.0, "fisher_samples": 1000},
    "lwf": {"alpha": 1.0, "temperature": 2.0},
}


def pin_prefix(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def engine_run(cfg: RunConfig, data) -> dict:
    return Engine(cfg, dataset=data).run()


def timed_process(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, cwd=HERE.parent)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", default="naive,er,derpp,ewc,lwf")
    ap.add_argument("--core", type=int, default=0, help="CPU core every run is pinned to [0]")
    ap.add_argument("--no-process", action="store_true", help="skip the whole-process comparison")
    ap.add_argument("--foreach", action="store_true", help="lifelong with optimizer_params='foreach=True'")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where both sides train [cpu]")
    args = ap.parse_args()
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pin = pin_prefix(args.core)
    data = load_dataset("fashion-mnist")
    x_all, test_x = (t.to(args.device) for t in normalised(data))
    tmp = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    rows = []
    for strategy in strategies:
        hp = HPARAMS[strategy]
        kernel = {"optimizer_params": "foreach=True"} if args.foreach else {}
        cfg = RunConfig(scenario="split-fashion-mnist", strategy=strategy, hparams=hp, threads=1,
                        device=args.device, **kernel)
        bare_kw = {k: v for k, v in hp.items() if k in ("ewc_lambda", "fisher_samples", "alpha", "beta",
                                                         "temperature")}
        t = {"bare": [], "bare fused": [], "lifelong": [], "bare process": [], "lifelong process": []}
        acc = {}
        for r in range(args.repeats):
            s, acc["bare"] = timed(bare_run, data, x_all, test_x, strategy=strategy, seed=r, **bare_kw)
            t["bare"].append(s)
            t["bare fused"].append(timed(bare_run, data, x_all, test_x, strategy=strategy, seed=r, fused=True,
                                         **bare_kw)[0])
            s, res = timed(engine_run, cfg.with_overrides(seed=r), data)
            t["lifelong"].append(s)
            acc["lifelong"] = res["final_accuracy"]
            if args.no_process:
                continue
            t["bare process"].append(timed_process(
                [*pin, sys.executable, str(HERE / "bare_loop.py"), "--strategy", strategy, "--seed", str(r),
                 "--device", args.device], env))
            flags = [f"-p{k}={v}" for k, v in hp.items()]
            t["lifelong process"].append(timed_process(
                [*pin, sys.executable, "-m", "lifelong", "run", "--scenario", "split-fashion-mnist", "--strategy",
                 strategy, "--seed", str(r), "--threads", "1", "-q", "--run-dir", str(tmp / f"{strategy}-{r}"),
                 "--device", args.device,
                 *flags, *(["--optimizer-params", "foreach=True"] if args.foreach else [])], env))
        med = {k: statistics.median(v) if v else float("nan") for k, v in t.items()}
        med["paired"] = statistics.median(a / b for a, b in zip(t["lifelong"], t["bare"], strict=True))
        rows.append((strategy, med, acc))
        print(f"  {strategy}: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nSplit-FashionMNIST, MLP 784-256-256-10, SGD 0.01/0.9, batch 32, 1 epoch; 1 thread pinned to core "
          f"{args.core}; {args.device}; median of {args.repeats} alternating repeats; torch {torch.__version__}"
          + ("; lifelong with the multi-tensor (foreach) SGD step" if args.foreach else ""))
    print(f"{'strategy':9}{'bare s':>8}{'lifelong s':>11}{'ratio':>7}{'paired':>7}{'vs fused':>9}   "
          f"{'bare proc s':>11}{'lifelong proc s':>16}{'ratio':>7}   final acc bare / lifelong (last repeat)")
    for strategy, med, acc in rows:
        print(f"{strategy:9}{med['bare']:8.2f}{med['lifelong']:11.2f}{med['lifelong'] / med['bare']:7.2f}"
              f"{med['paired']:7.2f}{med['lifelong'] / med['bare fused']:9.2f}   "
              f"{med['bare process']:11.2f}{med['lifelong process']:16.2f}"
              f"{med['lifelong process'] / med['bare process']:7.2f}   {acc['bare']:.3f} / {acc['lifelong']:.3f}")


if __name__ == "__main__":
    main()
