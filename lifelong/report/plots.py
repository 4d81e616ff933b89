"""Report figures as PNG files, from plain data (lists, dicts), with no display needed.

Figures are built with `matplotlib.figure.Figure` and its Agg canvas directly, never through pyplot, so they
leave no global state behind and work in threads and on headless machines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

from lifelong.tracking.files import save_figure_atomic

DPI = 100
COMPARISON_METRICS = ("final_accuracy", "average_incremental_accuracy", "forgetting", "min_acc", "wc_acc", "wf10")
ACCURACY_BARS = ("final_accuracy", "average_incremental_accuracy", "min_acc", "wc_acc")  # higher is better
FORGETTING_BARS = ("forgetting", "wf10", "wf100")  # lower is better: a panel of their own
BAR_LABELS = {"final_accuracy": "final acc", "average_incremental_accuracy": "avg inc acc", "min_acc": "min-ACC",
              "wc_acc": "WC-ACC", "forgetting": "forgetting", "wf10": "WF(10)", "wf100": "WF(100)"}


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return save_figure_atomic(fig, path, metadata={"Software": None})


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _mark_boundaries(ax: Any, boundaries: Sequence[int] | None, label_experiences: bool = True) -> None:
    """Dashed vertical lines at the task switches, each experience's span labelled at the top."""
    if not boundaries:
        return
    starts = [0, *boundaries[:-1]]
    for i, (a, b) in enumerate(zip(starts, boundaries, strict=True)):
        if i % 2:
            ax.axvspan(a, b, color="0.93", zorder=0)
        if label_experiences and len(boundaries) <= 20:
            ax.text((a + b) / 2, 1.0, f"E{i}", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=8, color="0.35")
    for b in boundaries[:-1]:
        ax.axvline(b, color="0.45", linestyle="--", linewidth=0.9, zorder=1)


def _percent_axis(ax: Any, axis: str = "y") -> None:
    """Ticks of a 0..1 accuracy axis shown as percentages (the report's one convention)."""
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def readable_loss_axis(ax: Any, values: Sequence[float]) -> None:
    """A log axis only when the losses span more than a decade, with plain tick labels at 1, 2, 5 x 10^k
    (never bare powers of ten with unlabelled minor ticks); a linear axis otherwise."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0 or max(finite) / min(finite) <= 10:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_accuracy_matrix(matrix: Sequence[Sequence[float]], path: str | os.PathLike,
                         title: str = "Accuracy matrix") -> Path:
    """Heatmap of R[i][j] (accuracy on experience j after training experience i), values written in the cells."""
    rows, cols = len(matrix), max((len(r) for r in matrix), default=0)
    data = [[math.nan] * cols for _ in range(rows)]
    for i, r in enumerate(matrix):
        data[i][: len(r)] = _nan(r)
    fig = _figure(max(3.5, 0.55 * cols + 2.2), max(2.8, 0.45 * rows + 1.6))
    ax = fig.add_subplot()
    im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="accuracy", format=PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("evaluated on experience j")
    ax.set_ylabel("after training experience i")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_title(title)
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                v = data[i][j]
                if not math.isnan(v):
                    ax.text(j, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 else "white")
    return _save(fig, path)


def plot_accuracy_curves(steps: Sequence[int], accuracy: Sequence[Sequence[float | None]],
                         boundaries: Sequence[int] | None, path: str | os.PathLike,
                         title: str = "Accuracy during training (continual evaluation)",
                         mean: Sequence[float | None] | None = None) -> Path:
    """Accuracy on each experience against the global step, task switches marked: the stability-gap picture.

    `accuracy[i][j]` is the accuracy on experience j at evaluation i (None before it was seen); `mean`, if given,
    is drawn as a thick black line (e.g. the mean over the experiences seen so far)."""
    width = max((len(r) for r in accuracy), default=0)
    fig = _figure(8.0, 4.2)
    ax = fig.add_subplot()
    _mark_boundaries(ax, boundaries)
    for j in range(width):
        ys = _nan([r[j] if j < len(r) else None for r in accuracy])
        ax.plot(steps, ys, linewidth=1.2, marker="." if len(steps) <= 60 else None, label=f"E{j}")
    if mean is not None:
        ax.plot(steps, _nan(mean), color="black", linewidth=2.0, label="mean (seen)")
    ax.set_ylim(-0.02, 1.02)
    _percent_axis(ax)
    ax.set_xlabel("global training step")
    ax.set_ylabel("accuracy")
    ax.set_title(title, pad=14)
    if width <= 12:
        ax.legend(fontsize=8, loc="lower left", ncols=min(width + 1, 6))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: str | os.PathLike,
              boundaries: Sequence[int] | None = None, title: str = "Training loss",
              smooth: int | None = None) -> Path:
    """Loss against the global step, one line per label; long curves also get a moving average
    (`smooth` steps, by default 1/50 of the longest curve) drawn over the faint raw values."""
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    _mark_boundaries(ax, boundaries)
    longest = max((len(s) for s, _ in curves.values()), default=0)
    window = smooth if smooth is not None else max(1, longest // 50)
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for color, (label, (steps, values)) in zip(colors, curves.items(), strict=True):
        if window > 1:
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, _smooth(list(values), window), color=color, linewidth=1.5, label=label)
        else:
            ax.plot(steps, values, color=color, linewidth=1.2, label=label)
    readable_loss_axis(ax, [float(v) for _, vals in curves.values() for v in vals])
    ax.set_xlabel("global training step")
    ax.set_ylabel("loss" + (f" (moving average of {window})" if window > 1 else ""))
    ax.set_title(title, pad=14)
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_mean_accuracy_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float | None]]],
                              path: str | os.PathLike, boundaries: Sequence[int] | None = None,
                              title: str = "Mean accuracy over seen experiences",
                              bands: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]]
                              | None = None) -> Path:
    """One accuracy-vs-step line per label (e.g. per strategy in a comparison); `bands[label] = (low, high)`
    shades a spread around it (e.g. mean ± std over seeds)."""
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    _mark_boundaries(ax, boundaries)
    for i, (label, (steps, values)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(steps, _nan(values), linewidth=1.4, label=label, color=color)
        if bands and label in bands:
            low, high = bands[label]
            ax.fill_between(steps, _nan(low), _nan(high), color=color, alpha=0.2, linewidth=0)
    ax.set_ylim(-0.02, 1.02)
    _percent_axis(ax)
    ax.set_xlabel("global training step")
    ax.set_ylabel("accuracy")
    ax.set_title(title, pad=14)
    if curves:
        ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def comparison_metrics(summary: Sequence[Mapping[str, Any]], wanted: Sequence[str] = COMPARISON_METRICS) -> list[str]:
    """The metrics of `wanted` that at least one summary row has a mean for."""
    return [m for m in wanted if any(row.get(f"{m}_mean") is not None for row in summary)]


def plot_comparison(summary: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                    metrics: Sequence[str] | None = None, title: str = "Comparison across strategies") -> Path:
    """Grouped bars, one bar per strategy, mean with a ±std error bar over seeds, in percent: accuracies
    (higher is better) on the left panel, forgetting (lower is better) on a panel of its own on the right.

    `summary` rows look like {"strategy": "ewc", "final_accuracy_mean": 0.8, "final_accuracy_std": 0.01, ...}."""
    metrics = list(metrics) if metrics is not None else comparison_metrics(summary)
    panels = [(p, [m for m in metrics if m in group]) for p, group in
              (("accuracy (higher is better)", ACCURACY_BARS), ("forgetting (lower is better)", FORGETTING_BARS))]
    other = [m for m in metrics if m not in ACCURACY_BARS and m not in FORGETTING_BARS]
    if other:
        panels.append(("other", other))
    panels = [(p, ms) for p, ms in panels if ms]
    n = max(len(summary), 1)
    widths = [max(len(ms), 1) for _, ms in panels]
    fig = _figure(max(7.0, 1.1 * sum(widths) * (0.5 + 0.25 * n) + 1.5), 4.2)
    axes = fig.subplots(1, len(panels), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    width = 0.8 / n
    for ax, (panel, ms) in zip(axes, panels, strict=True):
        for i, row in enumerate(summary):
            means = [row.get(f"{m}_mean") for m in ms]
            stds = [row.get(f"{m}_std") or 0.0 for m in ms]
            xs = [k + (i - (n - 1) / 2) * width for k in range(len(ms))]
            ax.bar(xs, _nan(means), width=width * 0.95, yerr=stds, capsize=2, label=str(row.get("strategy", i)),
                   color=f"C{i % 10}")
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels([BAR_LABELS.get(m, m) for m in ms], fontsize=8)
        ax.axhline(0, color="0.3", linewidth=0.8)
        if panel != "other":
            _percent_axis(ax)
        ax.set_title(panel, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mean ± std over seeds")
    if summary:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
