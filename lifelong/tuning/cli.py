"""`lifelong tune`: one Optuna study per strategy; and `--protocol reality-check` (tune on A, evaluate on B).

lifelong/cli.py registers it with `add_tune_parser(sub)`. Optuna is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lifelong.arguments import MAX_STACK, MAX_WORKERS, check_count
from lifelong.errors import LifelongError

PRUNERS = ("median", "halving", "none")


def add_tune_parser(sub: Any) -> argparse.ArgumentParser:
    from lifelong.cli import add_setting_flags, add_stack_flag

    p = sub.add_parser("tune", help="tune strategies' hyperparameters (Optuna), or the reality-check protocol",
                       description="Tune each strategy's hyperparameters with Optuna (one study per strategy, "
                       "resumable, shared by any number of workers through --storage) on a held-out part of the "
                       "training data; with --protocol reality-check, tune on --tune-scenario and evaluate the "
                       "chosen settings unchanged on --eval-scenario. A run setting given as a flag (--lr, "
                       "--epochs, --batch-size, ...) and a hyperparameter given with -p are fixed, not searched. "
                       "See docs/tuning.md.")
    add_setting_flags(p, skip=("strategy", "seed"))
    p.add_argument("--strategies", default="er,ewc", help="comma-separated strategies [er,ewc]")
    p.add_argument("--trials", type=int, default=20, help="trials to run per strategy in this invocation [20]")
    p.add_argument("--workers", type=int, default=2, help="local worker processes, one thread each [2]")
    add_stack_flag(p, "trials", "in each worker")
    p.add_argument("--timeout", type=float, default=None, help="seconds per strategy after which no new trial "
                   "starts (a trial in flight finishes) [none]")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by every worker [sqlite:///STORE/"
                   "tune.db]")
    p.add_argument("--study", default=None, help="study name prefix; each strategy's study is PREFIX:STRATEGY "
                   "[the scenario]")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="pruning at experience ends [median]")
    p.add_argument("--space", metavar="YAML", default=None, help="search space overrides (see docs/tuning.md)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; tuning averages them; the reality check "
                   "evaluates with them [0]")
    p.add_argument("--out", metavar="DIR", default=None, help="results directory [STORE/tune-PREFIX]")
    p.add_argument("--protocol", default="standard", choices=("standard", "reality-check"),
                   help="standard: tune on --scenario; reality-check: tune on --tune-scenario, evaluate on "
                   "--eval-scenario [standard]")
    p.add_argument("--tune-scenario", default=None, help="reality check: the tuning scenario")
    p.add_argument("--eval-scenario", default=None, help="reality check: the evaluation scenario")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    p.add_argument("--store", default="runs", help="directory that holds runs [runs]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_tune)
    return p


def parse_names(flag: str, text: str, kind: type = str) -> list[Any]:
    try:
        values = [kind(v.strip()) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise LifelongError(f"{flag} {text!r}: expected comma-separated {kind.__name__} values") from None
    if not values:
        raise LifelongError(f"{flag} must name at least one value")
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise LifelongError(f"{flag} repeats {', '.join(repeated)}: give each once")
    return values


def cmd_tune(args: argparse.Namespace) -> int:
    from lifelong.cli import check_json_path, gather_shared_config, write_json

    strategies = parse_names("--strategies", args.strategies)
    seeds = parse_names("--seeds", args.seeds, int)
    check_count("--trials ", args.trials, 1, 100_000)
    check_count("--workers ", args.workers, 1, MAX_WORKERS)
    check_count("--stack ", args.stack, 1, MAX_STACK)
    if args.timeout is not None and not args.timeout > 0:
        raise LifelongError(f"--timeout {args.timeout!r} must be a positive number of seconds")
    cfg, shares = gather_shared_config(args, strategies)
    check_json_path(args.json)
    base = cfg.to_dict()
    fixed = given_values(args, cfg, shares)
    if args.protocol == "reality-check":
        if not args.tune_scenario or not args.eval_scenario:
            raise LifelongError("--protocol reality-check needs --tune-scenario A and --eval-scenario B")
        from lifelong.tuning.protocol import format_reality_check, reality_check

        output = reality_check(base, args.tune_scenario, args.eval_scenario, strategies, seeds, args.trials,
                               args.workers, args.store, storage=args.storage, study=args.study,
                               pruner=args.pruner, space_file=args.space, timeout=args.timeout, out=args.out,
                               quiet=args.quiet, stack=args.stack, strategy_hparams=shares, fixed=fixed)
        print(format_reality_check(output))
        write_json(args.json, output)
        return 0
    if args.tune_scenario or args.eval_scenario:
        raise LifelongError("--tune-scenario and --eval-scenario belong to --protocol reality-check; use --scenario")
    output = tune(base, base["scenario"], strategies, seeds, args.trials, args.workers, args.store,
                  storage=args.storage, study=args.study, pruner=args.pruner, space_file=args.space,
                  timeout=args.timeout, out=args.out, quiet=args.quiet, stack=args.stack, strategy_hparams=shares,
                  fixed=fixed)
    print(format_tune(output))
    write_json(args.json, {"studies": output["studies"], "storage": output["storage"]})
    return 0


def given_values(args: argparse.Namespace, cfg: Any, shares: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the user fixed on the command line, as --space entries: the searchable run settings given as flags
    (--lr 0.05 fixes lr) and each strategy's -p values, in a section of its own (a composition's by `part.name`:
    they were searched anyway)."""
    from lifelong.tuning.space import SEARCHABLE_SETTINGS

    fixed: dict[str, Any] = {name: getattr(cfg, name) for name in SEARCHABLE_SETTINGS
                             if getattr(args, name, None) is not None}
    for spec, values in shares.items():
        if values:
            fixed[spec] = {qualified(spec, k): v for k, v in values.items()}
    return fixed


def qualified(spec: str, name: str) -> str:
    """A hyperparameter's name in `spec`'s search space: bare for one strategy, `part.name` in a composition
    (where a bare -p name goes to the one part that declares it)."""
    from lifelong.strategies import STRATEGIES

    parts = [p.strip() for p in spec.split("+")]
    if len(parts) == 1 or "." in name:
        return name
    return next((f"{p}.{name}" for p in parts if name in STRATEGIES.get(p).params), name)


def tune(base: dict[str, Any], scenario: str, strategies: list[str], seeds: list[int], trials: int, workers: int,
         store: str, storage: str | None = None, study: str | None = None, pruner: str = "median",
         space_file: str | None = None, timeout: float | None = None, out: str | None = None, quiet: bool = False,
         heartbeat: tuple[int, int] | None = None, stack: int = 1,
         strategy_hparams: dict[str, dict[str, Any]] | None = None,
         fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `trials` more trials per strategy; write the results directory; return {"studies", "storage", ...}.
    `stack`: each worker trains up to that many trials at once as one stack (lifelong.training.stacked;
    strategies that cannot be stacked one at a time). `strategy_hparams`: each strategy's fixed hyperparameters
    on top of `base`'s (lifelong.strategies.base.hparams_per_strategy shares out the ones given once).
    `fixed`: --space entries that take precedence over the file's (the values given on the command line).

    Each study entry: strategy, n_trials (complete + pruned trials in the study), best_value (validation final
    average accuracy of the best complete trial), best_params (every value of its setting, sampled and fixed)."""
    from lifelong.strategies import STRATEGIES
    from lifelong.training.config import RunConfig
    from lifelong.training.stacked import stackable
    from lifelong.tuning import study as st
    from lifelong.tuning.space import build_space, fixed_values, load_space_file, validate_overrides

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for s in strategies:
        for part in s.split("+"):
            STRATEGIES.get(part.strip())
    overrides = load_space_file(space_file) if space_file else {}
    for key, value in (fixed or {}).items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    validate_overrides(strategies, overrides)
    from lifelong.data.scenarios import parse_scenario

    if parse_scenario(scenario)[0].online and "epochs" not in overrides:
        overrides["epochs"] = 1  # an online stream is seen once: every trial with epochs > 1 was refused
    check_count("stack=", stack, 1, MAX_STACK)
    base = {**base, "scenario": scenario}
    RunConfig.from_dict(base)
    url = st.storage_url(store, storage)
    prefix = study or scenario
    out_dir = Path(out) if out else Path(store) / f"tune-{prefix.replace('/', '_').replace(':', '_')}"
    studies, details, problems = [], [], []
    for strategy in strategies:
        space = build_space(strategy, overrides)
        own = with_share(base, strategy, strategy_hparams)
        for s in seeds:
            RunConfig.from_dict({**own, "strategy": strategy, "seed": s})
        spec = study_spec(st.study_name(prefix, strategy), url, scenario, strategy, own, space, seeds, pruner,
                          heartbeat)
        spec["stack"] = stack if stackable(RunConfig.from_dict({**own, "strategy": strategy})) else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage_obj = st.open_storage(url, heartbeat)
            study_obj = st.load_or_create(spec, storage_obj)
            recovered = st.recover(study_obj)
            if recovered and not quiet:
                print(f"{spec['study']}: {recovered} interrupted trial(s) marked failed and queued again",
                      file=sys.stderr)
            before = len(st.counted(study_obj))
            if not quiet:
                print(f"tuning {strategy} on {scenario}: {trials} more trial(s), {workers} worker(s), study "
                      f"'{spec['study']}' ({before} done) in {url}", file=sys.stderr)
            start = time.perf_counter()
            problems += st.optimize(spec, trials, workers, timeout)
            seconds = time.perf_counter() - start
            st.recover(study_obj)
            value, params = st.best(study_obj, fixed_values(space))
            n = len(st.counted(study_obj))
            imp, evaluator = st.importances(study_obj)
            rows = st.trial_rows(study_obj)
        studies.append({"strategy": strategy, "n_trials": n, "best_value": value, "best_params": params})
        details.append({"strategy": strategy, "study": spec["study"], "space": spec["space"], "seconds": seconds,
                        "new_trials": n - before, "importances": imp, "importance_evaluator": evaluator,
                        "trials": rows})
        if not quiet:
            shown = "-" if value is None else f"{100 * value:.1f}%"
            print(f"{strategy}: {n} trials in the study, best validation accuracy {shown}, {seconds:.0f} s",
                  file=sys.stderr)
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    output = {"studies": studies, "storage": url, "scenario": scenario, "seeds": list(seeds),
              "objective": "final average accuracy on a held-out 10% of each class's training data",
              "pruner": pruner, "details": details}
    from lifelong.tuning.results import write_results

    write_results(output, out_dir)
    output["out"] = str(out_dir)
    return output


def with_share(base: dict[str, Any], strategy: str, shares: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """`base` with `strategy`'s share of the hyperparameters added to its own."""
    share = (shares or {}).get(strategy, {})
    return {**base, "hparams": {**(base.get("hparams") or {}), **share}} if share else base


def study_spec(name: str, url: str, scenario: str, strategy: str, base: dict[str, Any], space: dict[str, Any],
               seeds: list[int], pruner: str, heartbeat: tuple[int, int] | None = None) -> dict[str, Any]:
    """What a worker needs to run trials of one study (`study.run_trial`, `study.work`), as plain data."""
    from lifelong.tuning import study as st

    return {"study": name, "storage": url, "scenario": scenario, "strategy": strategy,
            "base": {k: v for k, v in base.items() if k not in ("strategy", "seed", "scenario")},
            "space": {k: d.to_dict() for k, d in space.items()},
            "space_dims": {k: d.__dict__ for k, d in space.items()}, "seeds": list(seeds),
            "holdout": [st.HOLDOUT, st.HOLDOUT_SEED], "pruner": pruner, "heartbeat": heartbeat}


def format_tune(output: dict[str, Any]) -> str:
    lines = [f"{'strategy':12} {'trials':>6} {'best (val)':>10}  best setting"]
    for s in output["studies"]:
        value = "-" if s["best_value"] is None else f"{100 * s['best_value']:.1f}%"
        params = json.dumps(s["best_params"], default=str) if s["best_params"] else "-"
        lines.append(f"{s['strategy']:12} {s['n_trials']:>6} {value:>10}  {params}")
    lines.append(f"storage: {output['storage']}")
    if output.get("out"):
        lines.append(f"results: {output['out']} (lifelong report {output['out']})")
    return "\n".join(lines)
