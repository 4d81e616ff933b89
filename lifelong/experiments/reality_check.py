"""`lifelong reproduce reality-check`: the two-phase protocol of "Hyperparameters in Continual Learning: a
Reality Check" (methods.md 11), offline.

Tune each strategy on class-incremental Split-Digits (validation data held out of its training data), then run
the chosen settings unchanged on class-incremental Split-FashionMNIST (same 5-experience split structure, other
data) with seeds; print both phases, the gap and whether the ranking of the methods changes. `--quick`: three
strategies, a few trials each, one seed, a small MLP (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
from typing import Any

from lifelong.experiments.schedules import add_run_flags

FULL = {"tune": "split-digits", "eval": "split-fashion-mnist", "strategies": "naive,er,ewc,lwf,derpp",
        "trials": 20, "seeds": "0,1,2"}
QUICK = {"tune": "split-digits", "eval": "split-fashion-mnist", "strategies": "er,ewc,lwf", "trials": 3,
         "seeds": "0"}
QUICK_SETTINGS = {"hidden": "64", "epochs": 1, "device": "cpu"}


def add_reality_check_parser(targets: Any) -> argparse.ArgumentParser:
    """Add the `reality-check` target to `lifelong reproduce`'s subparsers."""
    p = targets.add_parser("reality-check", help="tune on one dataset, evaluate unchanged on another: does the "
                           "ranking of methods hold?", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/reproduce-reality-check", help="output directory "
                   "[runs/reproduce-reality-check]")
    p.add_argument("--strategies", default=None, help=f"comma-separated [{FULL['strategies']}]")
    p.add_argument("--trials", type=int, default=None, help=f"tuning trials per strategy [{FULL['trials']}]")
    p.add_argument("--seeds", default=None, help=f"comma-separated seeds [{FULL['seeds']}]")
    add_run_flags(p, "er, ewc, lwf; 3 trials, seed 0, small MLP (~1 min)")
    p.set_defaults(func=cmd_reproduce_reality_check)
    return p


def cmd_reproduce_reality_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lifelong.arguments import MAX_WORKERS, check_count
    from lifelong.training.config import RunConfig
    from lifelong.tuning.cli import parse_names
    from lifelong.tuning.protocol import format_reality_check, reality_check

    preset = QUICK if args.quick else FULL
    strategies = parse_names("--strategies", args.strategies or preset["strategies"])
    seeds = parse_names("--seeds", args.seeds or preset["seeds"], int)
    trials = check_count("--trials ", args.trials if args.trials is not None else preset["trials"], 1, 100_000)
    workers = check_count("--workers ", args.workers, 1, MAX_WORKERS)
    settings = {**(QUICK_SETTINGS if args.quick else {"device": "cpu"}), "data_dir": args.data_dir, "threads": 1}
    base = RunConfig.from_dict({**settings, "scenario": preset["tune"]}).to_dict()
    out = Path(args.out)
    if (out / "tune.db").exists():
        from lifelong.errors import LifelongError

        raise LifelongError(f"{out} already holds a reality check; choose another --out (or delete it)")
    space = None
    if args.quick:  # epochs fixed at 1 keeps the quick version short
        out.mkdir(parents=True, exist_ok=True)
        space = str(out / "space.yaml")
        Path(space).write_text("epochs: 1\n", encoding="utf-8")
    output = reality_check(base, preset["tune"], preset["eval"], strategies, seeds, trials,
                           1 if args.quick else workers, str(out), storage=f"sqlite:///{(out / 'tune.db').resolve()}",
                           space_file=space, out=str(out), quiet=args.quiet)
    print(format_reality_check(output))
    return 1 if output["failed"] else 0
