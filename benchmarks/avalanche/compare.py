"""lifelong vs Avalanche on Split-FashionMNIST (naive and ER-500), one thread per run, measured in one session.

1. Single runs: alternating Avalanche and lifelong runs of the same configuration; training+evaluation seconds
   timed inside each process (Avalanche's ~30 s import is not counted), median per implementation.
2. A sweep (strategies x seeds): Avalanche running the runs one by one in one process (sum of run times)
   against the wall time of `lifelong compare` (worker processes, spawn and data loading included), and of
   `lifelong compare --stack K` (each strategy's seeds trained as one stack per worker).
   `--sweep-only` skips part 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def avalanche(python: str, runs: list[tuple[str, int]]) -> list[dict]:
    spec = ",".join(f"{s}:{k}" for s, k in runs)
    out = subprocess.run([python, str(ROOT / "benchmarks/avalanche/avalanche_run.py"), "--runs", spec],
                         capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def lifelong_run(strategy: str, seed: int, tmp: Path) -> dict:
    out = tmp / f"{strategy}-{seed}-{time.time_ns()}.json"
    subprocess.run([str(ROOT / ".venv/bin/lifelong"), "run", "--strategy", strategy, "--seed", str(seed), "-q",
                    "--run-dir", str(out.with_suffix("")), "--json", str(out)], check=True, capture_output=True)
    r = json.loads(out.read_text())["results"][0]
    return {"strategy": strategy, "seed": seed, "seconds": r["train_seconds"], "final_accuracy": r["final_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--avalanche-python", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-seeds", type=int, default=5)
    ap.add_argument("--stack", type=int, default=0, help="also time compare --stack K [the sweep's seeds]")
    ap.add_argument("--sweep-only", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    single: dict[tuple[str, str], list[dict]] = {}
    for r in range(0 if args.sweep_only else args.repeats):
        for strategy in ("naive", "er"):
            single.setdefault(("avalanche", strategy), []).extend(avalanche(args.avalanche_python, [(strategy, r)]))
            single.setdefault(("lifelong", strategy), []).append(lifelong_run(strategy, r, tmp))
    print("single runs (median over repeats; training + per-experience evaluation, 1 thread)")
    print(f"{'strategy':8} {'avalanche s':>12} {'lifelong s':>11} {'speed-up':>9} {'avalanche acc':>14} "
          f"{'lifelong acc':>13}")
    for strategy in ("naive", "er") if single else ():
        a, b = single[("avalanche", strategy)], single[("lifelong", strategy)]
        ta, tb = statistics.median(x["seconds"] for x in a), statistics.median(x["seconds"] for x in b)
        aa, ab = statistics.mean(x["final_accuracy"] for x in a), statistics.mean(x["final_accuracy"] for x in b)
        print(f"{strategy:8} {ta:12.2f} {tb:11.2f} {ta / tb:8.1f}x {100 * aa:13.1f}% {100 * ab:12.1f}%")

    runs = [(s, k) for s in ("naive", "er") for k in range(args.sweep_seeds)]
    aval = avalanche(args.avalanche_python, runs)
    t_aval = sum(x["seconds"] for x in aval)
    def sweep(name: str, *extra: str) -> tuple[float, list[dict]]:
        t = time.perf_counter()
        out = tmp / name
        subprocess.run([str(ROOT / ".venv/bin/lifelong"), "compare", "--strategies", "naive,er", "--seeds",
                        ",".join(str(k) for k in range(args.sweep_seeds)), "--out", str(out), "-q", "--no-report",
                        *extra], check=True, capture_output=True)
        return time.perf_counter() - t, json.loads((out / "compare.json").read_text())["summary"]

    t_ours, ours = sweep("sweep")
    stack = args.stack or args.sweep_seeds
    t_stack, _ = sweep("sweep-stacked", "--stack", str(stack))
    print(f"\nsweep: naive,er x {args.sweep_seeds} seeds ({len(runs)} runs)")
    print(f"  avalanche one by one (sum of run times): {t_aval:7.1f} s")
    print(f"  lifelong compare (wall, 2 workers):       {t_ours:7.1f} s   speed-up {t_aval / t_ours:.1f}x")
    print(f"  lifelong compare --stack {stack} (wall):      {t_stack:7.1f} s   speed-up {t_aval / t_stack:.1f}x")
    for s in ours:
        a = [x["final_accuracy"] for x in aval if x["strategy"] == s["strategy"]]
        print(f"  {s['strategy']:6} accuracy: avalanche {100 * statistics.mean(a):.1f}%, "
              f"lifelong {100 * s['final_accuracy_mean']:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
