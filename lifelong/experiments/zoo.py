"""`lifelong reproduce zoo`: every registered method on class- and task-incremental Split-FashionMNIST, and
the pretrained-feature methods on the text topics.

For each scenario and method, over the seeds: final accuracy and forgetting (mean ± std), training time relative
to ER measured in the same run, and peak memory; as a markdown table, JSON and a bar chart. `--quick` runs a
seconds-long version on split-digits (seed 0). Methods that refuse a scenario (e.g. they need task identities)
show their one-line reason instead of numbers.

Third table: the methods that work on frozen features (NMC, SimpleCIL, ACIL, G-ACIL, DS-AL, RanPAC, SLCA), with
naive, ER and joint as references, on class-incremental split-fortunes-minilm (10 fortune topics as MiniLM
sentence embeddings: the embeddings are the frozen pretrained features). The closed-form learners read them
directly (`features=input`); the SGD methods train the MLP on them with lr 0.1 for 20 epochs (at the image
tables' lr 0.01 and 1 epoch, ~10 steps per experience, ER ends at 11%: the MLP has not learned yet). SLCA's
model is a single Linear head on the embeddings (`hidden=""`): its slow learner fine-tunes the pretrained
backbone, which here is MiniLM, fixed in the dataset; on the default MLP it would read the features of a random
256-256 MLP instead (41.4% there against 68.1% over 3 seeds, see docs/zoo/README.md). When the
fortune files or the MiniLM package are missing, this table is skipped with one line saying why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifelong.experiments.schedules import add_run_flags, parse_list, pct
from lifelong.strategies import STRATEGIES
from lifelong.tracking.files import save_figure_atomic, write_json_atomic, write_text_atomic
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine

FULL = {"lr": 0.01, "batch_size": 32, "epochs": 1}
QUICK = {"hidden": "64", "batch_size": 16, "epochs": 2}
# the library's lambda 1000 (swept on split-fashion-mnist) diverges with QUICK's narrow MLP on the 8x8 digits
# (loss inf at step 99): --quick lowers it for these, and says so in zoo.json's hparams
QUICK_HPARAMS = {"ewc": {"ewc_lambda": 100.0}, "online-ewc": {"ewc_lambda": 100.0}}
SCENARIOS = ("split-fashion-mnist", "task-split-fashion-mnist")
QUICK_SCENARIOS = ("split-digits", "task-split-digits")
TEXT_SCENARIO = "split-fortunes-minilm"
TEXT_STRATEGIES = ("er", "naive", "joint", "nmc", "simplecil", "acil", "g-acil", "ds-al", "ranpac", "slca")
QUICK_TEXT_STRATEGIES = ("er", "naive", "nmc", "ranpac")
TEXT = {"lr": 0.1, "batch_size": 32, "epochs": 20}
QUICK_TEXT = {"lr": 0.1, "batch_size": 32, "epochs": 5}
TEXT_MODEL = {"slca": {"hidden": ""}}  # the pretrained encoder is MiniLM: the run's model is only the head


def default_strategies() -> list[str]:
    """Every registered method with ER first (the time reference)."""
    names = [n for n in STRATEGIES if ":" not in n]
    return ["er", *[n for n in names if n != "er"]]


def text_hparams(strategy: str) -> dict[str, Any]:
    """On the text topics the inputs are the pretrained (MiniLM) features: feature-based learners read them."""
    return {"features": "input"} if "features" in getattr(STRATEGIES.get(strategy), "params", {}) else {}


def text_plan(strategies: Sequence[str], settings: dict[str, Any], data_dir: str = "") -> list[dict[str, Any]]:
    """One job spec per text strategy (empty when the text topics cannot be loaded here: a note says why)."""
    from lifelong.data.datasets import DATASETS
    from lifelong.errors import LifelongError

    try:
        DATASETS.get("fortunes-minilm")()
    except (LifelongError, ImportError) as e:
        print(f"text topics table skipped: {e}", file=sys.stderr)
        return []
    base = {**settings, "data_dir": data_dir, "threads": 1, "device": "cpu"}
    return [{"scenario": TEXT_SCENARIO, "strategy": s,
             "settings": {**base, **TEXT_MODEL.get(s, {}), "hparams": text_hparams(s)}} for s in strategies]


def add_zoo_parser(targets: Any) -> argparse.ArgumentParser:
    p = targets.add_parser("zoo", help="every method on class- and task-incremental Split-FashionMNIST",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/reproduce-zoo", help="output directory [runs/reproduce-zoo]")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    p.add_argument("--strategies", default="", help="comma-separated strategies [every registered one]")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated [{','.join(SCENARIOS)}]")
    p.add_argument("--text-strategies", default=",".join(TEXT_STRATEGIES),
                   help="comma-separated strategies of the text-topics table ('' skips it) [the frozen-feature "
                        "methods, naive, er, joint; --quick: " + ",".join(QUICK_TEXT_STRATEGIES) + "]")
    add_run_flags(p, "split-digits and task-split-digits, seed 0")
    p.set_defaults(func=cmd_reproduce_zoo)
    return p


def cmd_reproduce_zoo(args: argparse.Namespace) -> int:
    seeds = [0] if args.quick else parse_list("--seeds", args.seeds, int)
    strategies = parse_list("--strategies", args.strategies) if args.strategies else default_strategies()
    scenarios = list(QUICK_SCENARIOS) if args.quick else \
        parse_list("--scenarios", args.scenarios) if args.scenarios else []
    base = {**(QUICK if args.quick else FULL), "data_dir": args.data_dir, "threads": 1, "device": "cpu"}
    plan = [{"scenario": sc, "strategy": st,
             "settings": {**base, "hparams": QUICK_HPARAMS[st]} if args.quick and st in QUICK_HPARAMS else base}
            for sc in scenarios for st in strategies]
    text = args.text_strategies
    if args.quick and text == ",".join(TEXT_STRATEGIES):
        text = ",".join(QUICK_TEXT_STRATEGIES)
    if text:
        plan += text_plan(parse_list("--text-strategies", text), QUICK_TEXT if args.quick else TEXT, args.data_dir)
    output = reproduce_plan(plan, seeds, Path(args.out), args.workers, args.quiet)
    print(output["table"])
    print(f"\nwrote {args.out}/zoo.md, zoo.json, zoo.png")
    return 1 if output["failed"] else 0


def reproduce(base: dict[str, Any], scenarios: Sequence[str], strategies: Sequence[str], seeds: Sequence[int],
              out: Path, workers: int = 2, quiet: bool = False) -> dict[str, Any]:
    """Train every scenario x strategy x seed into `out`, then write the table, JSON and plot."""
    plan = [{"scenario": sc, "strategy": st, "settings": base} for sc in scenarios for st in strategies]
    return reproduce_plan(plan, seeds, out, workers, quiet)


def reproduce_plan(plan: Sequence[dict[str, Any]], seeds: Sequence[int], out: Path, workers: int = 2,
                   quiet: bool = False) -> dict[str, Any]:
    """Train every {scenario, strategy, settings} of `plan` x seed into `out`, then write the table, JSON and
    plot (one table per scenario, its rows in plan order)."""
    jobs = []
    for spec in plan:
        scenario, strategy = spec["scenario"], spec["strategy"]
        for seed in seeds:
            cfg = RunConfig.from_dict({**spec["settings"], "scenario": scenario, "strategy": strategy, "seed": seed})
            Engine.validate(cfg)
            jobs.append((scenario, strategy, cfg, out / "runs" / f"{scenario}-{strategy}-s{seed}"))
    scenarios = list(dict.fromkeys(sc for sc, *_ in jobs))

    def done(r: dict[str, Any]) -> None:
        if not quiet:
            what = r.get("error") or f"final accuracy {100 * r['final_accuracy']:.1f}%"
            print(f"{Path(r['run_dir']).name}: {what}", file=sys.stderr, flush=True)

    results = runner.run_plan([(cfg, d) for *_, cfg, d in jobs], out, workers, on_result=done,
                               finished="this experiment")
    runs = [{"scenario": sc, "strategy": st, **r} for (sc, st, _, _), r in zip(jobs, results, strict=True)]
    refused = [r for r in runs if "error" in r]
    rows = summarize(runs, scenarios, {sc: [s["strategy"] for s in plan if s["scenario"] == sc] for sc in scenarios})
    table = format_markdown(rows, seeds, {s["scenario"]: describe(s["settings"]) for s in plan})
    settings = {sc: next({k: v for k, v in s["settings"].items() if k != "hparams"} for s in plan
                         if s["scenario"] == sc) for sc in scenarios}
    hparams = {f"{s['scenario']}/{s['strategy']}": s["settings"]["hparams"] for s in plan
               if s["settings"].get("hparams")}
    models = {f"{s['scenario']}/{s['strategy']}": s["settings"]["hidden"] for s in plan
              if s["settings"].get("hidden") != settings[s["scenario"]].get("hidden")}  # per-method MLP sizes
    output = {"scenarios": scenarios, "seeds": list(seeds), "settings": settings, "hparams": hparams,
              "hidden": models,
              "summary": rows, "runs": runs, "table": table, "failed": len(refused)}
    write_json_atomic(output, out / "zoo.json")
    write_text_atomic(table + "\n", out / "zoo.md")
    plot(rows, scenarios, out / "zoo.png")
    return output


def summarize(runs: Sequence[dict[str, Any]], scenarios: Sequence[str],
              strategies: Sequence[str] | dict[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Per scenario and strategy (one list for all scenarios, or one per scenario): metrics over seeds, time
    relative to ER's median time on that scenario."""
    rows = []
    for scenario in scenarios:
        names = strategies[scenario] if isinstance(strategies, dict) else strategies
        er = [r["train_seconds"] for r in runs if r["scenario"] == scenario and r["strategy"] == "er"
              and "error" not in r]
        er_time = statistics.median(er) if er else None
        for strategy in names:
            rs = [r for r in runs if r["scenario"] == scenario and r["strategy"] == strategy]
            ok = [r for r in rs if "error" not in r]
            row: dict[str, Any] = {"scenario": scenario, "strategy": strategy, "runs": len(ok),
                                   "family": STRATEGIES.get(strategy).family}
            if not ok:
                row["error"] = rs[0]["error"] if rs else "not run"
                rows.append(row)
                continue
            for key in ("final_accuracy", "forgetting", "peak_rss_mb"):
                row[key] = runner.mean_std([r[key] for r in ok if r.get(key) is not None])
            seconds = statistics.median(r["train_seconds"] for r in ok)
            row["train_seconds"] = seconds
            row["time_vs_er"] = seconds / er_time if er_time else None
            rows.append(row)
    return rows


def describe(settings: dict[str, Any]) -> str:
    """The SGD settings of a table, in words."""
    epochs = settings.get("epochs", 1)
    return f"SGD lr {settings.get('lr', 0.01):g}, batch {settings.get('batch_size', 32)}, " \
        f"{epochs} epoch{'s' if epochs != 1 else ''} per experience"


def format_markdown(rows: Sequence[dict[str, Any]], seeds: Sequence[int],
                    notes: dict[str, str] | None = None) -> str:
    lines = [f"Every method, seeds {','.join(map(str, seeds))}; accuracy and forgetting in % (mean ± std over "
             "seeds), time = median training seconds relative to ER on the same scenario in the same run.", ""]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        lines += [f"### {scenario}", ""]
        if notes and notes.get(scenario):
            lines += [notes[scenario] + ".", ""]
        lines += ["| method | family | final acc | forgetting | time vs ER | peak MiB |", "|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["scenario"] == scenario):
            if "error" in r:
                lines.append(f"| {r['strategy']} | {r['family']} | failed or refused: {r['error']} | | | |")
                continue
            ratio = "-" if r["time_vs_er"] is None else f"{r['time_vs_er']:.2f}x"
            name = r["strategy"] if r["runs"] == len(seeds) else f"{r['strategy']} ({r['runs']} of {len(seeds)} seeds)"
            lines.append(f"| {name} | {r['family']} | {pct(r['final_accuracy'])} | "
                         f"{pct(r['forgetting'])} | {ratio} | {r['peak_rss_mb'][0]:.0f} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def plot(rows: Sequence[dict[str, Any]], scenarios: Sequence[str], path: Path) -> None:
    """One panel per scenario: final accuracy per method (bars, seed std as error bars)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) / max(len(scenarios), 1) + 2), 3.5 * len(scenarios)),
                 layout="tight")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(scenarios), 1, squeeze=False)[:, 0]
    families = sorted({r["family"] for r in rows})
    for ax, scenario in zip(axes, scenarios, strict=True):
        rs = [r for r in rows if r["scenario"] == scenario and "error" not in r]
        x = range(len(rs))
        ax.bar(x, [100 * r["final_accuracy"][0] for r in rs], yerr=[100 * r["final_accuracy"][1] for r in rs],
               color=[f"C{families.index(r['family']) % 10}" for r in rs], capsize=2)
        ax.set_xticks(list(x), [r["strategy"] for r in rs], rotation=60, ha="right", fontsize=8)
        ax.set(ylabel="final accuracy (%)", title=scenario, ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    save_figure_atomic(fig, path, dpi=100)
