"""`lifelong reproduce schedules`: learning-rate schedules across a stream of experiences.

On Split-FashionMNIST (or split-digits with --quick), with the same peak rate everywhere, compare
  constant        today's default: the constant --lr (reference)
  cosine-restart  a cosine per experience, re-warmed at every experience
  cosine-stream   one cosine over the whole stream (needs the total budget up front)
  infinite        warmup + cooldown in the first experience, then constant; every experience anneals its tail
  wsd+branches    WSD whose stable phase never ends, with a decayed branch at each experience end
and report final accuracy, forgetting, and the average accuracy over the experiences seen so far after each
experience, for the main runs and for the decayed branches; as a table (stdout, markdown, JSON) and a plot.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.evaluation.metrics import average_forgetting
from lifelong.tracking.files import save_figure_atomic, write_json_atomic, write_text_atomic
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine

FULL = {"scenario": "split-fashion-mnist", "lr": 0.01, "batch_size": 32, "epochs": 1}
QUICK = {"scenario": "split-digits", "hidden": "32", "lr": 0.05, "batch_size": 16, "epochs": 2}
VARIANTS = ("constant", "cosine-restart", "cosine-stream", "infinite", "wsd+branches")


def variant_settings(lr: float, first_length: int) -> dict[str, dict[str, Any]]:
    """Settings of every variant; warmup and phases are fractions of the first experience's steps."""
    warmup = max(1, round(0.05 * first_length))
    return {
        "constant": {},
        "cosine-restart": {"schedule": "cosine", "schedule_mode": "restart", "schedule_params": f"warmup={warmup}"},
        "cosine-stream": {"schedule": "cosine", "schedule_mode": "continue", "schedule_params": f"warmup={warmup}"},
        "infinite": {"schedule": "infinite", "schedule_mode": "infinite",
                     "schedule_params": f"constant={lr / 2:g},min_lr={lr / 100:g},warmup={warmup},"
                                        f"cooldown_end={round(0.15 * first_length)},"
                                        f"constant_end={round(0.8 * first_length)}"},
        "wsd+branches": {"schedule": "constant", "schedule_mode": "continue",  # WSD's warmup + stable phase
                         "schedule_params": f"warmup={warmup}",
                         "branch_every_experience": True, "branch_shape": "linear"},
    }


def add_reproduce_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `reproduce` (targets `schedules`, `zoo`, `scole`, `si-blurry`) to an argparse subparsers object;
    returns its parser."""
    parser = subparsers.add_parser("reproduce", help="re-run a shipped experiment (table + plot)",
                                   description="Re-run one of the experiments shipped with lifelong.")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    p = targets.add_parser("schedules", help="LR schedules across experiences: restart, stream, infinite, WSD "
                           "with decayed branches", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/reproduce-schedules", help="output directory [runs/reproduce-schedules]")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    p.add_argument("--strategies", default="naive,er", help="comma-separated strategies [naive,er]")
    add_run_flags(p, "a seconds-long version on split-digits (seed 0, er)")
    p.set_defaults(func=cmd_reproduce_schedules)
    from lifelong.experiments.zoo import add_zoo_parser

    add_zoo_parser(targets)
    from lifelong.experiments.scole import add_scole_parser
    from lifelong.experiments.si_blurry import add_si_blurry_parser

    add_scole_parser(targets)
    add_si_blurry_parser(targets)
    from lifelong.experiments.reality_check import add_reality_check_parser

    add_reality_check_parser(targets)
    return parser


def add_run_flags(p: argparse.ArgumentParser, quick_help: str) -> None:
    """The flags every shipped experiment takes: --quick (its help says what the short version runs),
    --workers, --data-dir, -q."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes, one thread each [2]")
    p.add_argument("--data-dir", default="", help="directory to look for dataset files first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def parse_list(flag: str, text: str, kind: type = str) -> list[Any]:
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LifelongError(f"{flag} {text!r}: expected comma-separated {kind.__name__} values") from None
    if not values:
        raise LifelongError(f"{flag} must name at least one value")
    return values


def cmd_reproduce_schedules(args: argparse.Namespace) -> int:
    seeds = [0] if args.quick else parse_list("--seeds", args.seeds, int)
    strategies = ["er"] if args.quick else parse_list("--strategies", args.strategies)
    base = {**(QUICK if args.quick else FULL), "data_dir": args.data_dir, "threads": 1, "device": "cpu"}
    output = reproduce(base, strategies, seeds, Path(args.out), args.workers, args.quiet)
    print(output["table"])
    print(f"\nwrote {args.out}/schedules.md, schedules.json, schedules.png")
    return 1 if output["failed"] else 0


def reproduce(base: dict[str, Any], strategies: Sequence[str], seeds: Sequence[int], out: Path,
              workers: int = 2, quiet: bool = False) -> dict[str, Any]:
    """Train every strategy x variant x seed into `out`, then write the table, JSON and plot."""
    probe = RunConfig.from_dict(base)
    lengths = Engine(probe).experience_steps()
    settings = variant_settings(probe.lr, lengths[0])
    jobs = []
    for strategy in strategies:
        for variant, extra in settings.items():
            for seed in seeds:
                cfg = RunConfig.from_dict({**base, **extra, "strategy": strategy, "seed": seed})
                Engine.validate(cfg)
                jobs.append((strategy, variant, cfg, out / "runs" / f"{strategy}-{variant}-s{seed}"))

    def done(r: dict[str, Any]) -> None:
        if not quiet:
            print(f"done {Path(r['run_dir']).name}", file=sys.stderr, flush=True)

    results = runner.run_plan([(cfg, d) for *_, cfg, d in jobs], out, workers, on_result=done,
                               finished="this experiment")
    runs = [{"strategy": s, "variant": v, **r} for (s, v, _, _), r in zip(jobs, results, strict=True)]
    failed = [r for r in runs if "error" in r]
    for r in failed:
        print(f"error: {r['strategy']} {r['variant']} seed {r['seed']}: {r['error']}", file=sys.stderr)
    rows = summarize(runs, strategies)
    table = format_markdown(rows, base["scenario"], seeds, lengths)
    output = {"scenario": base["scenario"], "seeds": list(seeds), "experience_steps": lengths,
              "variants": settings, "summary": rows, "runs": runs, "table": table, "failed": len(failed)}
    write_json_atomic(output, out / "schedules.json")
    write_text_atomic(table + "\n", out / "schedules.md")
    plot(rows, settings, probe, lengths, out / "schedules.png")
    return output


def seen_average(row: Sequence[float], k: int) -> float:
    """Average accuracy over experiences 0..k."""
    return sum(row[: k + 1]) / (k + 1)


def summarize(runs: Sequence[dict[str, Any]], strategies: Sequence[str]) -> list[dict[str, Any]]:
    """Per strategy and variant: mean and std over seeds of the metrics and of the per-experience curves."""
    rows = []
    for strategy in strategies:
        for variant in VARIANTS:
            rs = [r for r in runs if r["strategy"] == strategy and r["variant"] == variant and "error" not in r]
            if not rs:
                continue
            n = len(rs[0]["accuracy_matrix"])
            row: dict[str, Any] = {"strategy": strategy, "variant": variant, "runs": len(rs)}
            for key in ("final_accuracy", "average_incremental_accuracy", "forgetting", "train_seconds"):
                row[key] = runner.mean_std([r[key] for r in rs if r.get(key) is not None])
            row["seen_accuracy"] = [runner.mean_std([seen_average(r["accuracy_matrix"][k], k) for r in rs])[0]
                                    for k in range(n)]
            if all("branches" in r for r in rs):
                row["branch_seen_accuracy"] = [runner.mean_std([r["branches"][k]["final_accuracy"] for r in rs])[0]
                                               for k in range(n)]
                row["branch_final_accuracy"] = runner.mean_std([r["branches"][-1]["final_accuracy"] for r in rs])
                row["branch_forgetting"] = runner.mean_std(
                    [average_forgetting([b["accuracy"] for b in r["branches"]]) or 0.0 for r in rs])
            rows.append(row)
    return rows


def pct(pair: tuple[float | None, float | None] | None) -> str:
    if pair is None or pair[0] is None:
        return "-"
    m, s = pair
    return f"{100 * m:.1f} ± {100 * s:.1f}" if s else f"{100 * m:.1f}"


def format_markdown(rows: Sequence[dict[str, Any]], scenario: str, seeds: Sequence[int],
                    lengths: Sequence[int]) -> str:
    """Two markdown tables: final metrics, and average seen accuracy after each experience."""
    lines = [f"Schedules across experiences on {scenario}, seeds {','.join(map(str, seeds))} "
             f"({len(lengths)} experiences, {sum(lengths)} steps); accuracy in %, mean ± std over seeds.", "",
             "| strategy | variant | final acc | avg inc acc | forgetting | decayed branch: final acc | "
             "decayed branch: forgetting | time s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["train_seconds"]
        lines.append(f"| {r['strategy']} | {r['variant']} | {pct(r['final_accuracy'])} | "
                     f"{pct(r['average_incremental_accuracy'])} | {pct(r['forgetting'])} | "
                     f"{pct(r.get('branch_final_accuracy'))} | {pct(r.get('branch_forgetting'))} | "
                     f"{t[0]:.1f} |")
    n = len(lengths)
    lines += ["", "Average accuracy over the experiences seen so far, after each experience (mean over seeds):", "",
              "| strategy | model | " + " | ".join(f"after {k + 1}" for k in range(n)) + " |",
              "|---|---|" + "---|" * n]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['variant']} | "
                     + " | ".join(f"{100 * a:.1f}" for a in r["seen_accuracy"]) + " |")
        if "branch_seen_accuracy" in r:
            lines.append(f"| {r['strategy']} | {r['variant']}: decayed branch | "
                         + " | ".join(f"{100 * a:.1f}" for a in r["branch_seen_accuracy"]) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], settings: dict[str, dict[str, Any]], probe: RunConfig,
         lengths: Sequence[int], path: Path) -> None:
    """Left: the learning rate of each variant over the stream. Then one panel per strategy: seen accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lifelong.schedules import Constant, StreamSchedule, decay_branch

    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    fig = Figure(figsize=(5 * (1 + len(strategies)), 4), layout="tight")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(strategies), squeeze=False)[0]
    colors = {v: f"C{i}" for i, v in enumerate(VARIANTS)}
    total = sum(lengths)
    for variant, extra in settings.items():
        cfg = probe.with_overrides(**extra)
        stream = StreamSchedule(cfg.build_schedule(), lengths, cfg.schedule_mode)
        axes[0].plot(range(total), [stream.lr(g) for g in range(total)], color=colors[variant], lw=1.2,
                     label=variant)
        if cfg.branch_every_experience:
            for k, b in enumerate(sum(lengths[: k + 1]) for k in range(len(lengths))):
                steps = cfg.branch_steps or max(1, round(0.1 * lengths[k]))
                rates = decay_branch(Constant(peak=stream.lr(b - 1)), 0, steps, cfg.branch_shape, cfg.branch_min_lr)
                axes[0].plot(range(b, b + steps), rates, color=colors[variant], lw=1.2, ls="--")
    for b in [sum(lengths[: k + 1]) for k in range(len(lengths))]:
        axes[0].axvline(b, color="grey", lw=0.6, ls=":")
    axes[0].set(xlabel="step", ylabel="learning rate", title="schedules (dashed: decayed branches)")
    axes[0].legend(fontsize=7)
    x = list(range(1, len(lengths) + 1))
    for ax, strategy in zip(axes[1:], strategies, strict=True):
        for r in (r for r in rows if r["strategy"] == strategy):
            ax.plot(x, [100 * a for a in r["seen_accuracy"]], marker="o", color=colors[r["variant"]],
                    label=r["variant"])
            if "branch_seen_accuracy" in r:
                ax.plot(x, [100 * a for a in r["branch_seen_accuracy"]], marker="s", ls="--",
                        color=colors[r["variant"]], label=f"{r['variant']}: decayed branch")
        ax.set(xlabel="experiences seen", ylabel="avg accuracy on seen experiences (%)", title=strategy, xticks=x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure_atomic(fig, path, dpi=100)
