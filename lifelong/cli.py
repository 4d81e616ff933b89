"""The `lifelong` command line: run, compare, resume, list, runs (and the commands of other layers)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError

DEFAULT_DEMO = "naive,ewc,lwf,er,derpp,joint"


def add_setting_flags(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per run setting (--lr, --batch-size, ...), plus -p NAME=VALUE and --config."""
    from lifelong.training.config import SETTINGS

    g = p.add_argument_group("run settings (defaults in brackets; also settable in a --config YAML file)")
    for name, param in SETTINGS.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(param.default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{param.help} [{'on' if param.default else 'off'}]")
        else:
            rng = f"; {param.describe_range()}" if param.low is not None or param.choices else ""
            g.add_argument(flag, default=None, metavar=name.upper(), help=f"{param.help} [{param.default}{rng}]")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="strategy hyperparameter, repeatable (e.g. -p buffer_size=200); see `lifelong list`. With "
                        "several strategies (compare, tune) it goes to each that declares it; -p er.buffer_size=200 "
                        "to er alone")
    p.add_argument("--config", metavar="YAML", help="YAML file of settings; flags override it")


def gather_config(args: argparse.Namespace, skip: Sequence[str] = ()):
    """Settings from defaults < YAML file < flags, validated."""
    from lifelong.training.config import RunConfig

    values, hparams = gather_settings(args, skip)
    return RunConfig.from_dict({**values, "hparams": hparams})


def gather_shared_config(args: argparse.Namespace, strategies: list[str]) -> tuple[Any, dict[str, dict[str, Any]]]:
    """For commands over several strategies (compare, tune): the settings without hyperparameters, validated,
    and each strategy's share of the hyperparameters (`-p` and the YAML file's `hparams`)."""
    from lifelong.strategies.base import hparams_per_strategy
    from lifelong.training.config import RunConfig

    values, hparams = gather_settings(args, ("strategy", "seed"))
    return RunConfig.from_dict({**values, "hparams": {}}), hparams_per_strategy(strategies, hparams)


def gather_settings(args: argparse.Namespace, skip: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, hyperparameters) from defaults < YAML file < flags, not yet validated."""
    from lifelong.training.config import SETTINGS, load_yaml

    values: dict[str, Any] = load_yaml(args.config) if args.config else {}
    hparams = dict(values.pop("hparams", None) or {})
    for name in SETTINGS:
        if name not in skip and getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    for item in args.param:
        if "=" not in item:
            raise LifelongError(f"-p {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        hparams[k.strip().replace("-", "_")] = v.strip()
    return values, hparams


def check_json_path(path: str | None) -> None:
    """Refuse, before any training, a --json path that cannot be written (its results would be lost)."""
    if not path:
        return
    target = Path(path)
    if target.is_dir() or not target.name:
        raise LifelongError(f"--json {path} is a directory; give a file name")
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise LifelongError(f"--json {path} cannot be written: {err.strerror or err}") from None
    if not existed:
        target.unlink(missing_ok=True)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        from lifelong.tracking.files import write_json_atomic

        if Path(path).is_dir() or not Path(path).name:
            raise LifelongError(f"--json {path} is a directory; give a file name")
        try:
            write_json_atomic(payload, path)
        except OSError as err:
            raise LifelongError(f"cannot write {path}: {err.strerror}") from None


def print_result(r: dict[str, Any]) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    print(f"{r['strategy']} (seed {r['seed']}): final accuracy {pct(r['final_accuracy'])}, "
          f"average incremental accuracy {pct(r['average_incremental_accuracy'])}, BWT {pct(r['bwt'])}, "
          f"forgetting {pct(r['forgetting'])}, {r['train_seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MiB")
    if "a_auc" in r:
        print(f"online: A_auc {pct(r['a_auc'])}, A_last {pct(r['a_last'])}, online accuracy "
              f"{pct(r['online_accuracy'])}")
    from lifelong.report.tables import fwt_meaningful, mean_gap

    if r.get("fwt") is not None and fwt_meaningful(r.get("scenario"), [r.get("accuracy_matrix") or []]):
        print(f"forward transfer {pct(r['fwt'])}")
    if r.get("evaluations"):
        print(f"continual evaluation ({r['evaluations']} evaluations): min-ACC {pct(r.get('min_acc'))}, WC-ACC "
              f"{pct(r.get('wc_acc'))}, mean stability gap {pct(mean_gap(r))}")
    print(f"run stored in {r['run_dir']}")


# --- commands ------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Train one run; under torchrun, data-parallel (rank 0 chooses the run directory, prints and writes)."""
    from lifelong.training import distributed, runner

    cfg = gather_config(args)
    run_dir = args.run_dir or runner.default_run_dir(cfg, args.store)
    main = distributed.main_process()
    if main:
        check_json_path(args.json)
    try:
        result = runner.run(cfg, run_dir, loggers=with_progress(args, split_names(args.log)) if main else [])
    except KeyboardInterrupt:
        if not main:
            return 1
        raise LifelongError(f"interrupted; resume with: lifelong resume {run_dir}") from None
    if not main:
        return 0
    print_result(result)
    write_json(args.json, {"scenario": cfg.scenario, "results": [result]})
    return 0


def split_names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def with_progress(args: argparse.Namespace, loggers: list[str]) -> list[str]:
    """The progress logger (a bar on a terminal, periodic lines otherwise) unless --quiet."""
    tracking_setup(args, loggers)
    return loggers if args.quiet else ["progress", *loggers]


def tracking_setup(args: argparse.Namespace, loggers: Sequence[str]) -> None:
    """Where MLflow logs go: MLFLOW_TRACKING_URI if set, else one SQLite store for every run under --store
    (STORE/mlflow.db), in the experiment --mlflow-experiment (MLFLOW_EXPERIMENT_NAME, default "lifelong"); set
    in the environment so that worker processes log to the same place. The store and experiment are created
    here once, before any worker starts."""
    import os

    if "mlflow" not in [n.strip().lower() for n in loggers]:
        return
    if getattr(args, "mlflow_experiment", None):
        os.environ["MLFLOW_EXPERIMENT_NAME"] = args.mlflow_experiment
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        from lifelong.tracking.loggers import MLFLOW_DB

        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(Path(args.store) / MLFLOW_DB).resolve()}"
    from lifelong.tracking.loggers import prepare_mlflow

    print(f"mlflow: {prepare_mlflow(Path(args.store) / 'run')} experiment "
          f"'{os.environ.get('MLFLOW_EXPERIMENT_NAME', 'lifelong')}' (browse: mlflow ui --backend-store-uri "
          f"{os.environ['MLFLOW_TRACKING_URI']})", file=sys.stderr)


def cmd_resume(args: argparse.Namespace) -> int:
    from lifelong.training import distributed, runner

    main = distributed.main_process()  # under torchrun only rank 0 reports
    result = runner.resume(args.run, loggers=with_progress(args, split_names(args.log)) if main else [])
    if not main:
        return 0
    print_result(result)
    write_json(args.json, {"scenario": result["scenario"], "results": [result]})
    return 0


def add_stack_flag(p: argparse.ArgumentParser, runs: str, where: str) -> None:
    """--stack K: train up to K `runs` at once `where`, as one stack (lifelong.training.stacked)."""
    p.add_argument("--stack", type=int, default=1, metavar="K",
                   help=f"train up to K {runs} at once {where}, their forward and backward passes batched with "
                   "torch.func.vmap (the same results as separate runs within float rounding; pays off on a GPU, "
                   "not on a CPU; SI and RWalk, which need their task gradient alone, run one at a time; "
                   "docs/stacked.md) [1]")


def cmd_compare(args: argparse.Namespace) -> int:
    from lifelong.tracking.loggers import ProgressLogger
    from lifelong.training import runner

    runner.check_workers(args.workers)
    runner.check_stack(args.stack)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    cfg, shares = gather_shared_config(args, strategies)
    check_json_path(args.json)
    for strategy, preset in (getattr(args, "strategy_hparams", None) or {}).items():  # the user's -p wins
        shares[strategy] = {**preset, **shares.get(strategy, {})}
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise LifelongError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if not strategies or not seeds:
        raise LifelongError("--strategies and --seeds must each name at least one value")
    out = Path(args.out or Path(args.store) / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    n_runs = len(strategies) * len(seeds)
    # a bar over the steps of all runs on a terminal; elsewhere only a line per finished run
    bar = ProgressLogger(desc=f"{n_runs} runs", disable=True if getattr(args, "quiet", False) else None,
                         plain_interval=None)
    finished = []

    def progress(state: dict[str, tuple[int, int]]) -> None:
        done = sum(s for s, _ in state.values())
        total = sum(t for _, t in state.values()) or 1
        known = sum(1 for _, t in state.values() if t)
        bar.set_total(max(total, int(total * len(state) / max(known, 1))))
        bar.log(done, {})

    def on_result(r: dict[str, Any]) -> None:
        finished.append(r)
        what = (f"error: {r['error']}" if "error" in r else
                f"final accuracy {100 * r['final_accuracy']:.1f}%, {r['train_seconds']:.1f} s")
        bar.write(f"[{len(finished)}/{n_runs}] {r['strategy']} seed {r['seed']}: {what}")

    stacked = f", up to {args.stack} seeds at once in each" if args.stack > 1 else ""

    def announce() -> None:  # once every setting is checked: a refused comparison prints only its error
        print(f"comparing {', '.join(strategies)} x seeds {seeds} on {cfg.scenario} "
              f"({args.workers} worker process{'es' if args.workers > 1 else ''}{stacked}) -> {out}", file=sys.stderr)

    try:
        tracking_setup(args, split_names(getattr(args, "log", None)))
        output = runner.compare(cfg, strategies, seeds, out, workers=args.workers, progress=progress,
                                loggers=split_names(getattr(args, "log", None)), on_result=on_result,
                                strategy_hparams=shares, stack=args.stack, on_start=announce)
    except KeyboardInterrupt:
        raise LifelongError(f"interrupted; finished runs are kept in {out}: the same command with --out {out} "
                            "resumes the others") from None
    finally:
        bar.close()
    from lifelong.report.tables import comparison_table

    print(comparison_table(output["results"], output.get("scenario", cfg.scenario)))
    if not args.no_report:
        from lifelong.report.html import write_comparison_report

        print(f"report: {write_comparison_report(out)}")
    failed = [r for r in output["results"] if "error" in r]
    for r in failed:
        print(f"error: {r['strategy']} seed {r['seed']}: {r['error']}", file=sys.stderr)
    print(f"comparison stored in {out}")
    write_json(args.json, output)
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from lifelong.data.datasets import DATASETS
    from lifelong.data.scenarios import (
        FIXED_SCENARIOS,
        SCENARIO_KINDS,
        format_kind_parameters,
        kind_parameters,
        scenario_names,
    )
    from lifelong.models.backbones import MODELS
    from lifelong.strategies import STRATEGIES

    def params_text(params: dict) -> str:
        return ", ".join(f"{k}={p.default} {p.describe_range()}" for k, p in params.items()) or "-"

    print("datasets:")
    for name in DATASETS:
        print(f"  {name:16} {DATASETS.help(name)}")
    print("scenarios (<kind>-<dataset>; set a kind's parameters with --scenario-params KEY=VALUE,...):")
    for kind in SCENARIO_KINDS.values():
        shown = kind.name if kind.name in FIXED_SCENARIOS else kind.name + "-*"
        print(f"  {shown:16} {kind.help} [{kind.default_experiences} experiences]")
        if kind_parameters(kind):
            print(f"  {'':16}   {format_kind_parameters(kind)}")
    print("  " + ", ".join(scenario_names()))
    print("strategies (combine with '+', e.g. er+lwf; set hyperparameters with -p NAME=VALUE; "
          "[task-free]: runs on online streams, whose boundaries are hidden):")
    for name, cls in STRATEGIES.items():
        print(f"  {name:16} {STRATEGIES.help(name)}{' [task-free]' if getattr(cls, 'task_free', False) else ''}")
        print(f"  {'':16}   {params_text(cls.params)}")
    print("models:")
    for name in MODELS:
        print(f"  {name:16} {MODELS.help(name)}")
    from lifelong.schedules.cli import format_schedules

    print("learning-rate schedules (lifelong schedule NAME --steps N ...):")
    print(format_schedules())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from lifelong.tracking.store import RunStore, find_runs, run_dir_held, scenario_of
    from lifelong.tuning.results import tuning_lines

    roots = args.roots or [args.store]
    found, tunings = find_runs(roots), tuning_lines(roots)
    missing = [r for r in roots if not Path(r).exists()]
    if missing:
        raise LifelongError(f"{', '.join(missing)}: no such directory")
    if not found and not tunings:
        print(f"no runs under {', '.join(roots)}")
        return 0
    if found:
        print(f"{'kind':6} {'status':11} {'strategy':12} {'seed':>4} {'final':>9}  {'scenario':22} run")
    damaged, stopped = [], []
    for d in found:
        try:
            store = RunStore.open(d)
            try:
                meta = store.checked_meta()
            finally:
                store.close()
        except LifelongError as err:
            print(f"{'-':6} {'damaged':11} {'-':12} {'-':>4} {'-':>9}  {'-':22} {d}")
            damaged.append(str(err))
            continue
        cfg, res = meta["config"], meta.get("result")
        res = res if isinstance(res, dict) else {}
        kind = str(meta.get("kind", "cl"))
        if kind == "lm":  # a language-model run: its final mean held-out loss, its corpora as the scenario
            loss = res.get("mean_final_loss")
            final = f"{loss:.3f}" if isinstance(loss, (int, float)) and not isinstance(loss, bool) else "-"
            what, seed = cfg.get("model", "?"), cfg.get("seed", "?")
            scenario = ",".join(cfg.get("corpora") or []) if isinstance(cfg.get("corpora"), list) else "?"
        else:
            acc = res.get("final_accuracy")
            final = f"{100 * acc:.1f}%" if isinstance(acc, (int, float)) and not isinstance(acc, bool) else "-"
            what, seed, scenario = cfg.get("strategy", "?"), cfg.get("seed", "?"), scenario_of(meta)
        status = str(meta.get("status", "?"))
        if status == "running" and run_dir_held(d) is False:  # its process died without recording its end
            status = "stopped"
            stopped.append(f"{d} stopped while training (its process was killed): "
                           + (f"lifelong lm --resume {d}" if kind == "lm" else f"lifelong resume {d}")
                           + " continues it")
        print(f"{kind:6} {status:11} {str(what):12} {str(seed):>4} {final:>9}  {str(scenario):22} {d}")
    for line in stopped:
        print(line)
    for line in tunings:
        print(line)
    for reason in damaged:
        print(f"error: {reason}", file=sys.stderr)
    return 1 if damaged else 0


CORE_COMMANDS = ("run", "compare", "resume", "list", "runs")


class Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags (`run --out DIR` was taken as `--output-mask DIR` and refused with a
    message about output masks); an unknown flag is named with the closest flags of its subcommand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.commands: Any = None

    def add_subparsers(self, **kwargs: Any) -> Any:
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = self
            while owner.commands is not None and getattr(parsed, owner.commands.dest, None) in owner.commands.choices:
                owner = owner.commands.choices[getattr(parsed, owner.commands.dest)]
            flags = [f for action in owner._actions for f in action.option_strings if f.startswith("--")]
            owner.error("unrecognized arguments: " + " ".join([with_hint(a, flags) for a in extra
                                                              if a.startswith("-")] or extra))
        return parsed


def with_hint(given: str, flags: list[str]) -> str:
    """`given` with the flags it may stand for: those it begins (flags are never abbreviated), else the closest."""
    name = given.split("=")[0]
    close = [f for f in flags if f.startswith(name)] or difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    return f"{given} (did you mean {' or '.join(close[:3])}?)" if close and name.startswith("--") else given


def add_output_flags(p: argparse.ArgumentParser, training: bool | None = None) -> None:
    """--json, --store and -q of every command that stores runs; --log and --mlflow-experiment where runs are
    trained (`training`; by default run, compare and resume)."""
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    if training if training is not None else p.prog.split()[-1] in ("run", "compare", "resume"):
        p.add_argument("--log", metavar="NAMES", help="extra metric logs, comma-separated: csv, jsonl, "
                       "tensorboard (in the run directory), mlflow (MLFLOW_TRACKING_URI, else STORE/mlflow.db), "
                       "wandb (pip install wandb; WANDB_MODE=offline without an account)")
        p.add_argument("--mlflow-experiment", metavar="NAME", default=None,
                       help="MLflow experiment the runs go to [MLFLOW_EXPERIMENT_NAME, else lifelong]")
    p.add_argument("--store", default="runs", help="directory that holds runs [runs]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_compare_flags(p: argparse.ArgumentParser, strategies: str) -> None:
    """The flags of `compare` besides the run settings (also those of its presets, such as analytic-demo)."""
    p.add_argument("--strategies", default=strategies, help=f"comma-separated strategies [{strategies}]")
    p.add_argument("--seeds", default="0", help="comma-separated seeds [0]")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes, one thread each [2]")
    add_stack_flag(p, "seeds of a strategy", "in one worker")
    p.add_argument("--out", metavar="DIR", help="comparison directory [a new one under --store]")
    p.add_argument("--no-report", action="store_true", help="skip writing the HTML report of the comparison")
    add_output_flags(p, training=True)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; for one of the CORE_COMMANDS only the core subcommands (no other layer is imported)."""
    parser = Parser(
        prog="lifelong", description="Continual learning for PyTorch: train, compare, resume and inspect runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lifelong compare\n  lifelong run --scenario split-fashion-mnist --strategy er --seed 0\n"
               "  lifelong list\n  lifelong runs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train one strategy on one scenario", description="Train one strategy on one "
                       "scenario; the run is stored (config, metrics, checkpoints) and can be resumed.")
    add_setting_flags(p)
    p.add_argument("--run-dir", "--out", metavar="DIR", dest="run_dir",
                   help="directory of this run [a new one under --store]")
    add_output_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="several strategies x seeds on one scenario -> a table of mean ± std",
                       description="Train several strategies with several seeds on one scenario, in parallel "
                       "worker processes, and print mean ± std of each metric.")
    add_setting_flags(p, skip=("strategy", "seed"))
    add_compare_flags(p, DEFAULT_DEMO)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("resume", help="finish an interrupted run from its last checkpoint",
                       description="Finish an interrupted run; the final metrics equal an uninterrupted run's.")
    p.add_argument("run", metavar="RUN_DIR", help="the run's directory")
    add_output_flags(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("list", help="datasets, scenarios, strategies (with hyperparameters) and models",
                       description="List what can be named: datasets, scenarios, strategies with each "
                                   "hyperparameter's default and allowed range, models, optimizers, loggers.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("runs", help="list stored runs",
                       description="List the runs, comparisons and tunings stored under the given directories: "
                                   "status, strategy, seed, final accuracy, scenario and directory.")
    p.add_argument("roots", nargs="*", help="directories to search [--store]")
    p.add_argument("--store", default="runs", help="directory that holds runs [runs]")
    p.set_defaults(func=cmd_runs)
    if command in CORE_COMMANDS:  # the other layers' parsers import matplotlib (report), the LM stack, ...
        return parser

    from lifelong.schedules.cli import add_schedule_parser

    add_schedule_parser(sub).set_defaults(func=lambda a: a.handler(a))

    from lifelong.report.cli import add_report_parser

    add_report_parser(sub)

    from lifelong.analytic.cli import (
        add_analytic_demo_parser,
        add_unlearn_parser,
        run_analytic_demo,
        run_unlearn_command,
    )

    add_unlearn_parser(sub).set_defaults(func=run_unlearn_command)
    add_analytic_demo_parser(sub).set_defaults(func=run_analytic_demo)

    from lifelong.lm.cli import add_lm_experiment_parser, add_lm_parser

    add_lm_parser(sub)
    add_lm_experiment_parser(sub)

    from lifelong.experiments.schedules import add_reproduce_parser

    add_reproduce_parser(sub)

    from lifelong.tuning.cli import add_tune_parser

    add_tune_parser(sub)
    return parser


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (timeout, a batch scheduler, kill) stops a command as Ctrl-C does: the run is recorded as
    interrupted, resumable, instead of being left 'running'. The previous handler is put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     line: str | None = None) -> str:
    """A warning as the CLI's other messages: one line, no source file and line (those are for developers)."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.formatwarning = one_line_warning
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with terminate_as_interrupt():
            return args.func(args)
    except LifelongError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lifelong list | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
