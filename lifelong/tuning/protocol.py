"""The reality-check protocol (Cha & Cho, "Hyperparameters in Continual Learning: a Reality Check"; methods.md 11).

Phase 1 (tuning): each strategy is tuned on the tuning scenario A (`lifelong tune`: validation data held out of
A's training data, seeds averaged) and its best setting h* chosen. Phase 2 (evaluation): h* is run *unchanged* on
the evaluation scenario B (same scenario kind and split structure, other data) with every seed, through
`runner.compare` (the one training loop), and scored on B's test split. Reported: both phases, the gap (phase-1
optimum minus phase-2 mean) and the ranking of the strategies in each phase.

B's data is never read in phase 1: phase 1 loads only A's dataset; B's is loaded when phase 2 starts. With A = B
the protocol is conventional reporting: the tuned setting's test accuracy on the same benchmark (the same runs as
`lifelong compare` with those settings).

Deviation from the paper: the paper grid-searches; here Optuna's TPE sampler (with pruning) searches the same
declared space, and phase 1 scores on held-out training data of A rather than on A's test split.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError


def ranking(scores: dict[str, float | None]) -> dict[str, int]:
    """Rank 1 = best score; strategies without a score rank last (ties keep the given order)."""
    order = sorted(scores, key=lambda s: -(scores[s] if scores[s] is not None else float("-inf")))
    return {s: i + 1 for i, s in enumerate(order)}


def check_same_structure(a: str, b: str) -> None:
    from lifelong.data.scenarios import parse_scenario

    kind_a, kind_b = parse_scenario(a)[0], parse_scenario(b)[0]
    if kind_a.name != kind_b.name:
        raise LifelongError(f"the reality check keeps the scenario structure: {a} is {kind_a.name}, {b} is "
                            f"{kind_b.name}; choose two scenarios of one kind (e.g. split-digits and "
                            "split-fashion-mnist)")


def reality_check(base: dict[str, Any], tune_scenario: str, eval_scenario: str, strategies: list[str],
                  seeds: list[int], trials: int, workers: int, store: str, storage: str | None = None,
                  study: str | None = None, pruner: str = "median", space_file: str | None = None,
                  timeout: float | None = None, out: str | None = None, quiet: bool = False,
                  stack: int = 1, strategy_hparams: dict[str, dict[str, Any]] | None = None,
                  fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune on `tune_scenario`, evaluate the chosen settings on `eval_scenario` with `seeds`; both phases.
    `stack`: trials (phase 1) and seeds (phase 2) trained up to that many at once (see `tune`);
    `strategy_hparams`, `fixed`: each strategy's fixed hyperparameters and the values given on the command line
    (see `tune`)."""
    from lifelong.training import runner
    from lifelong.training.config import RunConfig
    from lifelong.tuning.cli import tune, with_share
    from lifelong.tuning.space import split_values

    check_same_structure(tune_scenario, eval_scenario)
    RunConfig.from_dict({**base, "scenario": eval_scenario})
    out_dir = Path(out) if out else Path(store) / f"reality-check-{tune_scenario}-{eval_scenario}"
    phase1 = tune(base, tune_scenario, strategies, seeds, trials, workers, store, storage=storage,
                  study=study or f"reality-check-{tune_scenario}", pruner=pruner, space_file=space_file,
                  timeout=timeout, out=str(out_dir / "tuning"), quiet=quiet, stack=stack,
                  strategy_hparams=strategy_hparams, fixed=fixed)
    chosen = {s["strategy"]: s["best_params"] for s in phase1["studies"]}
    untuned = [name for name, params in chosen.items() if params is None]
    if untuned:
        raise LifelongError(f"no complete tuning trial for {', '.join(untuned)}: run more --trials")
    results = []
    for strategy in strategies:
        settings, hparams = split_values(strategy, chosen[strategy])
        cfg = RunConfig.from_dict({**with_share(base, strategy, strategy_hparams), **settings,
                                   "scenario": eval_scenario})
        if not quiet:
            print(f"evaluating {strategy} on {eval_scenario} with {settings} {hparams}, seeds {seeds}",
                  file=sys.stderr)
        # one directory per chosen setting: a later invocation whose tuning chose another setting evaluates it
        # beside the old one (it failed with 'holds a run with other settings'); the same setting resumes
        digest = hashlib.sha256(json.dumps(chosen[strategy], sort_keys=True, default=str).encode()).hexdigest()[:8]
        where = out_dir / "evaluation" / f"{strategy.replace('+', '_')}-{digest}"
        out_c = runner.compare(cfg, [strategy], seeds, where, workers=workers, strategy_hparams={strategy: hparams},
                               stack=stack)
        results += out_c["results"]
    summary = {r["strategy"]: r for r in runner.summarize_results(results)}
    tuned = {s["strategy"]: s["best_value"] for s in phase1["studies"]}
    evaluated = {s: (summary[s]["final_accuracy_mean"] if s in summary else None) for s in strategies}
    rank1, rank2 = ranking(tuned), ranking(evaluated)
    rows = []
    for s in strategies:
        t, e = tuned[s], evaluated[s]
        rows.append({"strategy": s, "best_params": chosen[s], "tuning_accuracy": t, "evaluation_accuracy": e,
                     "evaluation_std": summary[s]["final_accuracy_std"] if s in summary else None,
                     "gap": None if t is None or e is None else t - e, "tuning_rank": rank1[s],
                     "evaluation_rank": rank2[s]})
    failed = [r for r in results if "error" in r]
    output = {"protocol": "reality-check", "tune_scenario": tune_scenario, "eval_scenario": eval_scenario,
              "seeds": list(seeds), "storage": phase1["storage"], "studies": phase1["studies"], "rows": rows,
              "rank_changed": rank1 != rank2, "evaluation_results": results, "failed": len(failed),
              "out": str(out_dir)}
    from lifelong.tracking.files import write_json_atomic

    write_json_atomic(output, out_dir / "reality-check.json")
    return output


def format_reality_check(output: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [f"reality check: tuned on {output['tune_scenario']} (held-out training data), evaluated unchanged on "
             f"{output['eval_scenario']} (test split, seeds {','.join(map(str, output['seeds']))})", "",
             f"{'strategy':12} {'phase 1 (tune)':>14} {'rank':>4}  {'phase 2 (eval)':>16} {'rank':>4}  {'gap':>7}",
             "-" * 66]
    for r in output["rows"]:
        e = pct(r["evaluation_accuracy"]) + (f" ± {100 * r['evaluation_std']:.1f}" if r["evaluation_std"] else "")
        lines.append(f"{r['strategy']:12} {pct(r['tuning_accuracy']):>14} {r['tuning_rank']:>4}  {e:>16} "
                     f"{r['evaluation_rank']:>4}  {pct(r['gap']):>7}")
    order1 = " > ".join(r["strategy"] for r in sorted(output["rows"], key=lambda r: r["tuning_rank"]))
    order2 = " > ".join(r["strategy"] for r in sorted(output["rows"], key=lambda r: r["evaluation_rank"]))
    lines += ["", f"ranking in phase 1: {order1}", f"ranking in phase 2: {order2}",
              "the ranking changed between phases" if output["rank_changed"] else "the ranking is the same in "
              "both phases", f"results: {output['out']}"]
    return "\n".join(lines)
