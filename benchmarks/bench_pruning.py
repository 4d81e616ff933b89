"""What pruning saves in `lifelong tune`: the same N trials with the median pruner and with none.

    OMP_NUM_THREADS=1 python benchmarks/bench_pruning.py            # split-fashion-mnist, er, 8 trials
    OMP_NUM_THREADS=1 python benchmarks/bench_pruning.py --fast     # split-digits (seconds)

Both arms draw their parameters from Optuna's RandomSampler with the same seed (independent of the values seen,
unlike TPE, so trial i has the same setting in both arms; checked), and every trial runs `lifelong tune`'s own
objective (`study.run_trial`: the validation split, a report after each experience, the pruner of `--pruner
median`). The arms are interleaved trial by trial, alternating which goes first, so that a change of load on a
shared machine falls on both. Printed: total trial time per arm, trials pruned, best value found, and the saving
(unpruned time / pruned time). One worker, one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fast", action="store_true", help="split-digits instead of split-fashion-mnist")
    p.add_argument("--scenario", default=None, help="scenario [split-fashion-mnist; split-digits with --fast]")
    p.add_argument("--strategy", default="er", help="strategy [er]")
    p.add_argument("--trials", type=int, default=8, help="trials per arm [8]")
    p.add_argument("--sampler-seed", type=int, default=0, help="RandomSampler seed, shared by both arms [0]")
    p.add_argument("--hidden", default="128", help="MLP hidden sizes [128]")
    p.add_argument("--epochs", type=int, default=0, help="epochs per experience, fixed; 0: searched in tune's "
                   "default range [0]")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from lifelong.training.config import RunConfig
    from lifelong.tuning import study as st
    from lifelong.tuning.cli import study_spec
    from lifelong.tuning.space import build_space

    scenario = args.scenario or ("split-digits" if args.fast else "split-fashion-mnist")
    base = RunConfig.from_dict({"scenario": scenario, "hidden": args.hidden, "device": "cpu", "threads": 1}).to_dict()
    space = build_space(args.strategy, {"epochs": args.epochs} if args.epochs else {})
    st.validation_dataset(scenario, base.get("data_dir", ""))  # loaded once, before any timing
    arms = {}
    for pruner in ("median", "none"):
        spec = study_spec(f"bench:{pruner}", "memory", scenario, args.strategy, base, space, [0], pruner)
        study = optuna.create_study(direction="maximize", pruner=st.make_pruner(pruner),
                                    sampler=optuna.samplers.RandomSampler(seed=args.sampler_seed))
        arms[pruner] = {"spec": spec, "study": study, "seconds": []}
    for i in range(args.trials):
        for pruner in (("median", "none") if i % 2 == 0 else ("none", "median")):
            arm = arms[pruner]
            start = time.perf_counter()
            arm["study"].optimize(lambda t, spec=arm["spec"]: st.run_trial(t, spec), n_trials=1)
            arm["seconds"].append(time.perf_counter() - start)
        a, b = (arms[k]["study"].trials[-1] for k in ("median", "none"))
        if a.params != b.params:
            raise SystemExit(f"trial {i}: the arms sampled different settings ({a.params} vs {b.params})")
        print(f"trial {i}: {json.dumps({k: round(v, 5) for k, v in a.params.items()})} median: {a.state.name} "
              f"{arms['median']['seconds'][-1]:.1f} s, none: {b.state.name} {arms['none']['seconds'][-1]:.1f} s",
              file=sys.stderr)
    figures = {"scenario": scenario, "strategy": args.strategy, "trials": args.trials, "hidden": args.hidden,
               "epochs": args.epochs or "searched", "sampler_seed": args.sampler_seed, "arms": {}}
    for pruner, arm in arms.items():
        trials = arm["study"].trials
        done = [t.value for t in trials if t.state.name == "COMPLETE"]
        figures["arms"][pruner] = {"seconds": sum(arm["seconds"]),
                                   "pruned": sum(t.state.name == "PRUNED" for t in trials),
                                   "failed": sum(t.state.name == "FAIL" for t in trials),
                                   "best_value": max(done) if done else None,
                                   "experiences_run": sum(len(t.intermediate_values) for t in trials)}
    pruned, full = figures["arms"]["median"], figures["arms"]["none"]
    figures["saving_ratio"] = full["seconds"] / pruned["seconds"]
    print(f"{scenario}, {args.strategy}, {args.trials} trials (RandomSampler seed {args.sampler_seed}), 1 worker")
    print(f"{'pruner':8} {'seconds':>8} {'pruned':>6} {'experiences':>11} {'best value':>10}")
    for pruner, f in figures["arms"].items():
        best = "-" if f["best_value"] is None else f"{100 * f['best_value']:.1f}%"
        print(f"{pruner:8} {f['seconds']:8.1f} {f['pruned']:6d} {f['experiences_run']:11d} {best:>10}")
    print(f"saving: unpruned time / pruned time = {figures['saving_ratio']:.2f}x "
          f"({100 * (1 - pruned['seconds'] / full['seconds']):.0f}% of the time saved)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
