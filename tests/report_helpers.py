"""Small run and comparison directories built with RunStore directly (no training), for the report tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lifelong.tracking.store import RunStore

N = None
# The hand-made curve of test_continual_metrics: boundaries 3, 6, 9, one evaluation per step.
E0 = [0.5, 0.75, 1.0, 0.75, 0.5, 0.375, 0.25, 0.5, 0.625]
E1 = [N, N, N, 0.25, 0.625, 0.875, 0.5, 0.75, 0.875]
E2 = [N, N, N, N, N, N, 0.25, 0.5, 1.0]
CURVE = {"steps": list(range(1, 10)), "accuracy": [list(r) for r in zip(E0, E1, E2, strict=True)]}
BOUNDS = [3, 6, 9]
MATRIX = [[1.0, 0.0, 0.0], [0.375, 0.875, 0.0], [0.625, 0.875, 1.0]]


def make_run(run_dir: Path, strategy: str = "naive", seed: int = 0, curve: bool = True, loss: bool = True,
             rows: int = 3, status: str = "finished", shift: float = 0.0) -> Path:
    store = RunStore.create(run_dir, {"config": {"scenario": "split-digits", "strategy": strategy, "seed": seed,
                                                 "lr": 0.05},
                                      "env": {"torch": "test", "python": "3"}})
    store.write_accuracy_row(-1, [0.125, 0.125, 0.125])
    for i in range(rows):
        store.write_accuracy_row(i, [max(0.0, v - shift) for v in MATRIX[i]])
    if curve:
        for step, row in zip(CURVE["steps"], CURVE["accuracy"], strict=True):
            store.log_curve(step, {j: max(0.0, v - shift) for j, v in enumerate(row) if v is not None})
    if loss:
        store.log_scalars([(s, "loss", 2.0 * math.exp(-s / 4) + shift) for s in range(1, 10)])
    store.set_meta(boundaries=BOUNDS[:rows], status=status)
    if status == "finished":
        store.set_meta(result={"strategy": strategy, "seed": seed, "train_seconds": 1.5, "hparams": {"lam": 1.0}})
    store.add_event("experience_end", {"experience": 0})
    store.close()
    return run_dir


def make_comparison(compare_dir: Path, with_curves: bool = True) -> Path:
    results = []
    for strategy, shift in (("naive", 0.0), ("er", 0.125)):
        for seed in (0, 1):
            make_run(compare_dir / f"{strategy}-s{seed}", strategy, seed, curve=with_curves, shift=shift)
            r = {"strategy": strategy, "seed": seed, "final_accuracy": 0.8 - shift + 0.01 * seed,
                 "average_incremental_accuracy": 0.85 - shift, "bwt": -0.19, "fwt": None, "forgetting": 0.19,
                 "accuracy_matrix": MATRIX, "initial_accuracy": [0.125] * 3, "train_seconds": 2.0,
                 "samples_per_second": 1000.0, "peak_rss_mb": 300.0, "hparams": {}}
            if with_curves:
                r.update(min_acc=0.375, wc_acc=0.58, wf10=0.25, wf100=0.25, curve=CURVE)
            results.append(r)
    summary = []
    for strategy in ("naive", "er"):
        rs = [r for r in results if r["strategy"] == strategy]
        row = {"strategy": strategy}
        for k in ("final_accuracy", "forgetting", "min_acc", "wc_acc"):
            xs = [r[k] for r in rs if r.get(k) is not None]
            row[f"{k}_mean"] = sum(xs) / len(xs) if xs else None
            row[f"{k}_std"] = 0.005 if xs else None
        summary.append(row)
    (compare_dir / "compare.json").write_text(json.dumps({"scenario": "split-digits", "results": results,
                                                          "summary": summary}))
    return compare_dir
