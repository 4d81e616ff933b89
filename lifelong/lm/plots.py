"""Plots of a continual pre-training run: held-out loss per domain over updates (forgetting and
adaptation)."""

from __future__ import annotations

import os
from pathlib import Path

from lifelong.tracking.files import save_figure_atomic


def _save(fig, path: Path) -> None:
    save_figure_atomic(fig, path, dpi=110, bbox_inches="tight")


def plot_run(result: dict, path: str | os.PathLike, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    steps = [e["step"] for e in result["eval"]]
    for name in result["eval"][0]["loss"]:
        (line,) = ax.plot(steps, [e["loss"][name] for e in result["eval"]], label=name)
        ends = [(e["step"], e["loss"][name]) for e in result["phase_end"] if e["deployable"] == "decayed"]
        if ends:
            ax.scatter(*zip(*ends, strict=False), color=line.get_color(), marker="v", zorder=3)
    for p in result["phases"][1:]:
        ax.axvline(p["start_step"], color="gray", lw=0.8, ls="--")
    ax.set_xlabel("update")
    ax.set_ylabel("held-out loss (nats/token)")
    cfg = result["config"]
    ax.set_title(title or f"{cfg['schedule']}, replay {cfg['replay']:g}")
    ax.legend(fontsize=8)
    _save(fig, Path(path))
    plt.close(fig)
