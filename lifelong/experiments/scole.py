"""`lifelong reproduce scole`: knowledge accumulation with plain SGD over a long stream with recurrence (SCoLe,
Lesort et al. 2023; methods.md 9.1).

On scole-fashion-mnist (offline; 500 short tasks of 2 classes drawn uniformly, 200 training samples each,
1 epoch, SGD lr 0.01 momentum 0.9, batch 32, MLP 256-256), train naive fine-tuning without and with output
masking (`output_mask=experience`: the loss covers only the current task's logits; the authors' "group"
masking), optionally ER as a reference, over the seeds. After every task the model is evaluated on the whole
test set, one evaluation set per class; the mean of a row is the accuracy on all classes. The claims: that
accuracy rises over hundreds of tasks although every task holds only 2 classes (knowledge accumulates when
classes recur), and masking helps.

Reported: accuracy on all classes after the first task and at 10%, 50% and 100% of the stream (mean ± std over
seeds); the per-task wall time (training, evaluation and checkpoint) and the per-step training time over the
first and the last 10% of the tasks (from each run's metrics.jsonl), to check the cost stays flat; a plot of
accuracy on all classes against the task; the JSON of everything. `--quick`: 100 tasks, seed 0, a 64-unit
MLP (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.experiments.schedules import add_run_flags, parse_list, pct
from lifelong.tracking.files import save_figure_atomic, write_json_atomic, write_text_atomic
from lifelong.tracking.loggers import JSONL_NAME
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine

FULL = {"scenario": "scole-fashion-mnist", "lr": 0.01, "batch_size": 32, "epochs": 1, "checkpoint_every": 0}
QUICK = {**FULL, "hidden": "64"}
FULL_TASKS, QUICK_TASKS = 500, 100
VARIANTS: dict[str, dict[str, Any]] = {
    "naive": {"strategy": "naive"},
    "naive+mask": {"strategy": "naive", "output_mask": "experience"},
    "er": {"strategy": "er"},
    "er+mask": {"strategy": "er", "output_mask": "experience"},
}
DEFAULT_VARIANTS = ("naive", "naive+mask")
POINTS = (0.1, 0.5, 1.0)  # fractions of the stream reported in the table (plus the first task)


def add_scole_parser(targets: Any) -> argparse.ArgumentParser:
    """Add the `scole` target to `lifelong reproduce`'s subparsers."""
    p = targets.add_parser("scole", help="SCoLe: plain SGD accumulates knowledge over 500 recurring 2-class tasks; "
                           "output masking helps", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/reproduce-scole", help="output directory [runs/reproduce-scole]")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    p.add_argument("--tasks", type=int, default=0, help=f"tasks in the stream [{FULL_TASKS}; --quick: {QUICK_TASKS}]")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)} [{','.join(DEFAULT_VARIANTS)}]")
    add_run_flags(p, f"{QUICK_TASKS} tasks, seed 0, a 64-unit MLP (~1 min)")
    p.set_defaults(func=cmd_reproduce_scole)
    return p


def cmd_reproduce_scole(args: argparse.Namespace) -> int:
    seeds = [0] if args.quick else parse_list("--seeds", args.seeds, int)
    variants = parse_list("--variants", args.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise LifelongError(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    tasks = args.tasks or (QUICK_TASKS if args.quick else FULL_TASKS)
    if not 2 <= tasks <= 1000:
        raise LifelongError(f"--tasks {tasks} is out of range: allowed [2, 1000]")
    base = {**(QUICK if args.quick else FULL), "experiences": tasks, "data_dir": args.data_dir, "threads": 1,
            "device": "cpu"}
    output = reproduce(base, variants, seeds, Path(args.out), args.workers, args.quiet)
    print(output["table"])
    print(f"\nwrote {args.out}/scole.md, scole.json, scole.png")
    return 1 if output["failed"] else 0


def reproduce(base: dict[str, Any], variants: Sequence[str], seeds: Sequence[int], out: Path,
              workers: int = 2, quiet: bool = False) -> dict[str, Any]:
    """Train every variant x seed into `out` (runner.run_many), then write the table, JSON and plot."""
    jobs = []
    for variant in variants:
        for seed in seeds:
            cfg = RunConfig.from_dict({**base, **VARIANTS[variant], "seed": seed})
            Engine.validate(cfg)
            jobs.append((variant, cfg, out / "runs" / f"{variant.replace('+', '_')}-s{seed}"))

    def done(r: dict[str, Any]) -> None:
        if not quiet:
            print(f"done {Path(r['run_dir']).name}" + (f": {r['error']}" if "error" in r else ""),
                  file=sys.stderr, flush=True)

    results = runner.run_plan([(cfg, d) for _, cfg, d in jobs], out, workers, on_result=done, loggers=("jsonl",),
                               finished="this experiment")
    runs = []
    for (variant, _, d), r in zip(jobs, results, strict=True):
        if "error" not in r:
            r = {**r, "timing": task_timing(d / JSONL_NAME)}
        runs.append({"variant": variant, **r})
    failed = [r for r in runs if "error" in r]
    for r in failed:
        print(f"error: {r['variant']} seed {r['seed']}: {r['error']}", file=sys.stderr)
    rows = summarize(runs, variants)
    tasks = int(base["experiences"])
    table = format_markdown(rows, base, seeds)
    output = {"scenario": base["scenario"], "tasks": tasks, "seeds": list(seeds),
              "settings": {k: v for k, v in base.items() if k != "data_dir"},
              "variants": {v: VARIANTS[v] for v in variants}, "points": point_tasks(tasks),
              "summary": rows, "runs": runs, "table": table, "failed": len(failed)}
    write_json_atomic(output, out / "scole.json")
    write_text_atomic(table + "\n", out / "scole.md")
    plot(rows, base, out / "scole.png")
    return output


def all_class_accuracy(matrix: Sequence[Sequence[float]]) -> list[float]:
    """Accuracy on all classes after each task: the mean of each row (one column per class, equal weights)."""
    return [sum(row) / len(row) for row in matrix]


def point_tasks(tasks: int) -> dict[str, int]:
    """Reported tasks (1-based): the first, and the task at each fraction of the stream."""
    return {"first": 1, **{f"{round(100 * f)}%": max(1, math.ceil(f * tasks)) for f in POINTS}}


def task_timing(path: Path) -> dict[str, Any]:
    """Per-task wall time and per-step training time from a run's metrics.jsonl (one line per step with its loss,
    one per task end with its accuracies; times in ms resolution): medians over the first and last 10% of tasks.

    Task time: between consecutive task ends (the task's steps, its evaluation and its checkpoint). Step time:
    within a task, (time of its last step - time of its first step) / (steps - 1), so evaluations are left out."""
    steps: list[list[float]] = [[]]
    ends: list[float] = []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                steps[-1].append(row["time"])
            elif "accuracy/average" in row:
                ends.append(row["time"])
                steps.append([])
    steps = steps[:len(ends)]
    task_s = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    step_s = [(s[-1] - s[0]) / (len(s) - 1) for s in steps if len(s) > 1]
    k = max(1, len(ends) // 10)

    def med(values: Sequence[float]) -> float | None:
        return statistics.median(values) if values else None

    return {"task_seconds_first": med(task_s[:k]), "task_seconds_last": med(task_s[-k:]),
            "step_ms_first": None if med(step_s[:k]) is None else 1000 * med(step_s[:k]),
            "step_ms_last": None if med(step_s[-k:]) is None else 1000 * med(step_s[-k:]), "window_tasks": k}


def summarize(runs: Sequence[dict[str, Any]], variants: Sequence[str]) -> list[dict[str, Any]]:
    """Per variant: accuracy on all classes at the reported tasks (mean, std over seeds), the mean curve, timing."""
    rows = []
    for variant in variants:
        rs = [r for r in runs if r["variant"] == variant and "error" not in r]
        if not rs:
            continue
        curves = [all_class_accuracy(r["accuracy_matrix"]) for r in rs]
        n = len(curves[0])
        row: dict[str, Any] = {"variant": variant, "runs": len(rs)}
        row["accuracy"] = {name: runner.mean_std([c[t - 1] for c in curves]) for name, t in point_tasks(n).items()}
        row["curve_mean"] = [statistics.fmean(c[t] for c in curves) for t in range(n)]
        row["curve_std"] = [runner.mean_std([c[t] for c in curves])[1] for t in range(n)]
        for key in ("task_seconds_first", "task_seconds_last", "step_ms_first", "step_ms_last"):
            row[key] = runner.mean_std([r["timing"][key] for r in rs if r["timing"][key] is not None])
        row["train_seconds"] = runner.mean_std([r["train_seconds"] for r in rs])
        rows.append(row)
    return rows


def num(pair: tuple[float | None, float | None], digits: int = 2) -> str:
    """A mean (± std when there are several seeds) of a time."""
    m, s = pair
    if m is None:
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s else f"{m:.{digits}f}"


def format_markdown(rows: Sequence[dict[str, Any]], base: dict[str, Any], seeds: Sequence[int]) -> str:
    """Accuracy on all classes at the reported tasks, and the per-task and per-step costs first vs last."""
    tasks = int(base["experiences"])
    points = point_tasks(tasks)
    model = base.get("hidden", "256,256")
    lines = [f"SCoLe on {base['scenario']}: {tasks} tasks of 2 classes, 200 samples each, 1 epoch, SGD lr "
             f"{base['lr']:g}, batch {base['batch_size']}, MLP {model}; seeds {','.join(map(str, seeds))}. "
             "Accuracy on all classes (whole test set) in %, mean ± std over seeds.", "",
             "| variant | " + " | ".join(f"after task {t} ({name})" if name != "first" else "after task 1"
                                        for name, t in points.items()) + " |",
             "|---|" + "---|" * len(points)]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(pct(r["accuracy"][name]) for name in points) + " |")
    k = max(1, tasks // 10)
    lines += ["", f"Cost over the stream (median over the first and the last {k} tasks, mean ± std over seeds): "
              "wall seconds per task (training, evaluation on all classes, checkpoint) and training ms per step.",
              "", "| variant | s/task first | s/task last | ms/step first | ms/step last | train s |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {num(r['task_seconds_first'], 3)} | {num(r['task_seconds_last'], 3)} | "
                     f"{num(r['step_ms_first'])} | {num(r['step_ms_last'])} | {num(r['train_seconds'], 0)} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], base: dict[str, Any], path: Path) -> None:
    """Accuracy on all classes against the task, one line per variant (band: ± std over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, r in enumerate(rows):
        x = range(1, len(r["curve_mean"]) + 1)
        m = [100 * a for a in r["curve_mean"]]
        s = [100 * (a or 0.0) for a in r["curve_std"]]
        ax.plot(x, m, color=f"C{i}", lw=1.2, label=r["variant"])
        ax.fill_between(x, [a - b for a, b in zip(m, s, strict=True)], [a + b for a, b in zip(m, s, strict=True)],
                        color=f"C{i}", alpha=0.2, lw=0)
    ax.set(xlabel="task", ylabel="accuracy on all classes (%)", ylim=(0, 100),
           title=f"SCoLe, {base['scenario']} ({base['experiences']} tasks of 2 classes)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure_atomic(fig, path, dpi=100)
