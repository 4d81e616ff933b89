"""What a tune leaves in its results directory: tune.json (studies, trials, importances), trials.csv and plots
(optimisation history and parameter importances per strategy, drawn with matplotlib so they work offline);
`lifelong report DIR` renders them."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.tracking.files import save_figure_atomic, write_json_atomic, write_text_atomic


def plot_name(strategy: str) -> str:
    """A strategy's name as a file name: '+' of compositions and ':' and '/' of import paths replaced."""
    return strategy.replace("+", "_").replace(":", "_").replace("/", "_")

TUNE_NAME = "tune.json"


def write_results(output: dict[str, Any], out_dir: Path) -> None:
    """tune.json, trials.csv and plots/ in `out_dir` (created)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output, out_dir / TUNE_NAME)
        write_text_atomic(trials_csv(output), out_dir / "trials.csv")
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        for d in output["details"]:
            plot_study(d, plot_dir / f"tune-{plot_name(d['strategy'])}.png")
    except OSError as err:
        raise LifelongError(f"cannot write the tuning results in {out_dir}: {err.strerror}") from None


def trials_csv(output: dict[str, Any]) -> str:
    buf = io.StringIO()
    names = sorted({k for d in output["details"] for t in d["trials"] for k in t["params"]})
    w = csv.writer(buf)
    w.writerow(["strategy", "number", "state", "value", "seconds", "steps", "retry_of", *names])
    for d in output["details"]:
        for t in d["trials"]:
            w.writerow([d["strategy"], t["number"], t["state"], t["value"], t["seconds"], t["steps"], t["retry_of"],
                        *[t["params"].get(n, "") for n in names]])
    return buf.getvalue()


def plot_study(detail: dict[str, Any], path: Path) -> None:
    """Objective of each trial and best so far (pruned trials at their last report), and the importances."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="tight")
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2)
    scored = [t for t in detail["trials"] if isinstance(t.get("value"), (int, float))]  # a hand-edited null: left out
    done = [t for t in scored if t["state"] == "COMPLETE"]
    pruned = [t for t in scored if t["state"] == "PRUNED"]
    ax.scatter([t["number"] for t in done], [100 * t["value"] for t in done], label="complete", s=18)
    ax.scatter([t["number"] for t in pruned], [100 * t["value"] for t in pruned], label="pruned (last report)",
               marker="x", s=18, color="C3")
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t["number"]):
        best = t["value"] if best is None else max(best, t["value"])
        xs.append(t["number"])
        ys.append(100 * best)
    ax.step(xs, ys, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title=f"{detail['strategy']}: optimisation history")
    ax.legend(fontsize=8)
    imp = detail.get("importances") or {}
    names = list(imp)[::-1]
    bx.barh(names, [imp[n] for n in names])
    bx.set(xlabel="importance", title=f"importance ({detail.get('importance_evaluator', '-')})")
    save_figure_atomic(fig, path, dpi=90)


def find_tunings(roots: Iterable[str | os.PathLike], depth: int = 2) -> list[Path]:
    """Tuning results directories (holding tune.json) under the given roots, at most `depth` levels down."""
    found: list[Path] = []
    for root in map(Path, roots):
        if (root / TUNE_NAME).is_file():
            found.append(root)
        if root.is_dir():
            for level in range(1, depth + 1):
                found += sorted(p.parent for p in root.glob("/".join(["*"] * level) + "/" + TUNE_NAME))
    return found


def tuning_lines(roots: Iterable[str | os.PathLike]) -> list[str]:
    """One line per tuning results directory under `roots`, for `lifelong runs`: each strategy's trial count and
    best validation value, or why its tune.json cannot be read."""
    lines = []
    for d in find_tunings(roots):
        try:
            data = json.loads((d / TUNE_NAME).read_text(encoding="utf-8"))
            studies = [s for s in data["studies"] if isinstance(s, dict)]
            parts = [f"{s['strategy']} {s['n_trials']} trials, best "
                     + (f"{100 * s['best_value']:.1f}%" if isinstance(s.get("best_value"), (int, float)) else "-")
                     for s in studies]
        except (OSError, ValueError, KeyError, TypeError) as err:
            lines.append(f"tune   damaged    {d} ({type(err).__name__}: {err}; rerun lifelong tune to rewrite it)")
            continue
        lines.append(f"tune   {data.get('scenario', '?')}: {'; '.join(parts) or 'no study'}  {d}")
    return lines
