"""Command line: ``lifelong lm`` (one continual pre-training run) and ``lifelong lm-experiment`` (the
comparison).

``lifelong/cli.py`` adds both with :func:`add_lm_parser` and :func:`add_lm_experiment_parser`; ``python -m
lifelong.lm lm ...`` runs them too. The flags' defaults are those of :class:`~lifelong.lm.train.LMConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from lifelong.errors import LifelongError
from lifelong.lm.corpora import BUILTIN_CORPORA
from lifelong.lm.experiment import run_experiment
from lifelong.lm.models import MODEL_PRESETS
from lifelong.lm.schedules import DECAY_SHAPES, SCHEDULES
from lifelong.lm.train import LMConfig, default_out_dir, resume_lm, run_lm
from lifelong.training.config import SETTINGS

DEFAULTS = LMConfig()


def _add_run_flags(p: argparse.ArgumentParser, experiment: bool = False) -> None:
    if not experiment:
        p.add_argument(
            "--corpora",
            default=",".join(DEFAULTS.corpora),
            help="phases in order, comma-separated; 'a+b' trains one phase on the union. Built-in: "
            f"{', '.join(BUILTIN_CORPORA)}; or a local file/directory, or hf:<dataset>[:config][@split] "
            "(default: %(default)s)",
        )
        p.add_argument(
            "--replay",
            type=float,
            default=DEFAULTS.replay,
            help="fraction of every batch drawn from earlier corpora, in [0, 1) (default: %(default)s)",
        )
        p.add_argument(
            "--schedule",
            default=DEFAULTS.schedule,
            choices=SCHEDULES,
            help="cosine/linear: re-warm + re-decay per phase; infinite; wsd (decayed branch at each "
            "phase end); constant (default: %(default)s)",
        )
        p.add_argument("--json", dest="json_path", default=None, help="also write the result JSON here")
        p.add_argument(
            "--eval-corpora",
            default="",
            help="extra corpora to evaluate but not train on, comma-separated (e.g. python-stdlib)",
        )
        p.add_argument("--probes", type=int, default=DEFAULTS.probes, help="retention probes shown once (0: none)")
        p.add_argument("--probe-step", type=int, default=None, help="update at which the probes are shown")
        p.add_argument(
            "--probe-len", type=int, default=DEFAULTS.probe_len,
            help="tokens per probe, at most --seq-len + 1 (default: %(default)s)"
        )
    p.add_argument(
        "--model",
        default=DEFAULTS.model,
        help=f"preset ({', '.join(MODEL_PRESETS)}), a local model directory, or a Hugging Face model name "
        "such as gpt2 (from the cache, or downloaded when a network is available) (default: %(default)s)",
    )
    p.add_argument(
        "--tokenizer",
        default=DEFAULTS.tokenizer,
        help="'byte' (no files), 'bpe:<vocab size>' (trained locally) or a tokenizer directory",
    )
    for flag, kind, text in (
        ("steps-per-phase", int, "updates per phase"),
        ("batch-size", int, "global batch in sequences"),
        ("seq-len", int, "tokens per sequence"),
        ("lr", float, "peak learning rate"),
        ("min-lr-ratio", float, "LR floor / peak"),
        ("warmup-frac", float, "warmup fraction of a phase"),
        ("const-lr-ratio", float, "infinite: constant LR / peak"),
        ("branch-frac", float, "wsd/infinite: decay-branch length as a fraction of a phase"),
    ):
        default = getattr(DEFAULTS, flag.replace("-", "_"))
        p.add_argument(f"--{flag}", type=kind, default=default, help=f"{text} (default: %(default)s)")
    p.add_argument(
        "--decay-shape",
        default=DEFAULTS.decay_shape,
        choices=DECAY_SHAPES,
        help="wsd: shape of the decay branches (exp and inverse need --min-lr-ratio > 0)",
    )
    p.add_argument(
        "--eval-every", type=int, default=DEFAULTS.eval_every, help="updates between evaluations (default: %(default)s)"
    )
    p.add_argument(
        "--log-every", type=int, default=DEFAULTS.log_every, help="updates between train-loss records "
        "(default: %(default)s)"
    )
    p.add_argument(
        "--eval-windows",
        type=int,
        default=DEFAULTS.eval_windows,
        help="held-out sequences per corpus (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: idle cores)")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:1 ...")
    kernel = SETTINGS["linear_kernel"]  # the one definition, shared with lifelong run
    p.add_argument("--linear-kernel", default=DEFAULTS.linear_kernel, choices=kernel.choices,
                   help=f"{kernel.help} (default: %(default)s)")
    p.add_argument(
        "--out", dest="out_dir", default=None, help="output directory (default: runs/lm-<timestamp>)"
    )
    p.add_argument("--cache-dir", default=None, help="token cache (default: ~/.cache/lifelong/lm-tokens)")
    p.add_argument("--no-checkpoints", action="store_true", help="do not save the phase-end checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every, metavar="N",
                   help="updates between resume checkpoints, also written at each phase end; 0: none "
                   "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress output (a bar on a terminal, plain "
                   "lines elsewhere)")
    p.add_argument("--log", metavar="NAMES", default="", help="extra metric logs, comma-separated: csv, jsonl, "
                   "tensorboard, mlflow, wandb (as for lifelong run)")
    p.add_argument("--config", metavar="YAML", default=None, help="YAML file of these settings (names as the "
                   "flags, dashes or underscores); a flag given with a non-default value overrides it")


def add_lm_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lm",
        help="continually pre-train a causal LM over a sequence of corpora",
        description="Continually pre-train a causal language model over a sequence of corpora (phases), with "
        "replay and budget-free LR schedules; evaluates held-out loss on every corpus. Under "
        "torchrun --nproc_per_node=N it trains data-parallel.",
    )
    _add_run_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="finish the interrupted run in RUN_DIR from its last checkpoint, with its stored settings "
                   "(only --threads, --no-progress, --json and --log may be given with it)")
    p.set_defaults(func=run_lm_command)
    return p


LIST_FIELDS = ("corpora", "eval_corpora")


def apply_config_file(args: argparse.Namespace) -> None:
    """Fill `args` from its --config YAML file: a setting there is used unless its flag was given with a value
    other than the flag's default. Unknown names and wrong types are one clear line."""
    path = getattr(args, "config", None)
    if not path:
        return
    from lifelong.training.config import load_yaml

    values = load_yaml(path)
    known = {f.name for f in dataclasses.fields(LMConfig)} | {"no_checkpoints", "no_progress", "log", "json"}
    renamed = {"out": "out_dir", "json": "json_path"}
    for raw, value in values.items():
        key = str(raw).replace("-", "_")
        key = renamed.get(key, key)
        if key not in known and key not in renamed.values():
            raise LifelongError(f"{path}: unknown setting '{raw}' for lifelong lm (settings: "
                                f"{', '.join(sorted(k for k in known if k != 'json'))})")
        if key in ("save_checkpoints", "progress"):
            key, value = f"no_{'checkpoints' if key == 'save_checkpoints' else 'progress'}", not value
        if not hasattr(args, key):
            continue
        if isinstance(value, list) and (key in LIST_FIELDS or key == "log"):
            value = ",".join(str(v) for v in value)
        if key in LIST_FIELDS or key == "log" or isinstance(getattr(DEFAULTS, key, None), str):  # text settings
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise LifelongError(f"{path}: '{raw}' must be text{' or a list' if key in LIST_FIELDS else ''}, "
                                    f"not {value!r}")
            value = str(value)
        elif isinstance(value, (list, dict)):
            raise LifelongError(f"{path}: '{raw}' must be a single value, not {value!r}")
        default = getattr(DEFAULTS, key, None)
        if key in LIST_FIELDS:
            default = ",".join(default) if isinstance(default, list) else ""
        current = getattr(args, key)
        if current is None or current == default or current is False or current == "":
            setattr(args, key, value)


def config_from_args(args: argparse.Namespace) -> LMConfig:
    """The LMConfig of parsed ``lifelong lm`` / ``lifelong lm-experiment`` flags (and their --config file)."""
    apply_config_file(args)
    return LMConfig(
        corpora=[c for c in args.corpora.split(",") if c.strip()],
        model=args.model,
        tokenizer=args.tokenizer,
        steps_per_phase=args.steps_per_phase,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        min_lr_ratio=args.min_lr_ratio,
        warmup_frac=args.warmup_frac,
        schedule=args.schedule,
        const_lr_ratio=args.const_lr_ratio,
        branch_frac=args.branch_frac,
        decay_shape=args.decay_shape,
        replay=args.replay,
        eval_every=args.eval_every,
        log_every=args.log_every,
        eval_windows=args.eval_windows,
        probes=args.probes,
        probe_step=args.probe_step,
        probe_len=args.probe_len,
        seed=args.seed,
        out_dir=args.out_dir,
        json_path=args.json_path,
        eval_corpora=[c for c in args.eval_corpora.split(",") if c.strip()] or None,
        cache_dir=args.cache_dir,
        threads=args.threads,
        device=args.device,
        linear_kernel=args.linear_kernel,
        save_checkpoints=not args.no_checkpoints,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
        loggers=[n.strip() for n in (getattr(args, "log", "") or "").split(",") if n.strip()],
    )


def format_summary(result: dict) -> str:
    s = result["summary"]
    names = list(s["final_loss"])
    w = max(12, *(len(n) for n in names))
    lines = [f"{'domain':<{w}}  {'after own phase':>15}  {'final':>8}  {'forgetting':>10}"]
    for n in names:
        lines.append(
            f"{n:<{w}}  {s['loss_after_own_phase'].get(n, float('nan')):>15.4f}  "
            f"{s['final_loss'][n]:>8.4f}  {s['forgetting'].get(n, float('nan')):>+10.4f}"
        )
    lines.append(
        f"tokens/s {result['tokens_per_second']:.0f}   wall {result['wall_seconds']:.1f}s   "
        f"results in {result['out_dir']}"
    )
    return "\n".join(lines)


RESUME_FLAGS = ("resume", "threads", "no_progress", "json_path", "log")


def _flag_defaults() -> dict:
    p = argparse.ArgumentParser()
    _add_run_flags(p)
    return vars(p.parse_args([]))


def run_lm_command(args: argparse.Namespace) -> int:
    """Run `lifelong lm` (or finish one with --resume); LifelongError propagates to the caller (printed as one
    line by the CLI)."""
    if args.resume:
        given = [k for k, v in _flag_defaults().items()
                 if k not in RESUME_FLAGS and getattr(args, k, v) != v]
        if given:
            flag = {"out_dir": "out", "json_path": "json"}.get(given[0], given[0]).replace("_", "-")
            raise LifelongError(f"--resume continues a run with its stored settings: drop --{flag} (only "
                                "--threads, --no-progress, --json and --log may be given with --resume)")
        log = [n.strip() for n in (args.log or "").split(",") if n.strip()]
        try:
            result = resume_lm(args.resume, threads=args.threads, progress=not args.no_progress,
                               json_path=args.json_path, loggers=log or None)
        except KeyboardInterrupt:
            raise LifelongError(f"interrupted; resume with: lifelong lm --resume {args.resume}") from None
    else:
        cfg = config_from_args(args)
        if cfg.out_dir is None:
            cfg.out_dir = str(default_out_dir())
        try:
            result = run_lm(cfg)
        except KeyboardInterrupt:
            if not cfg.checkpoint_every:
                raise LifelongError("interrupted (no resume checkpoints: --checkpoint-every 0)") from None
            raise LifelongError(f"interrupted; resume with: lifelong lm --resume {cfg.out_dir}") from None
    if int(os.environ.get("RANK", 0)) == 0:
        print(format_summary(result))
    return 0


def add_lm_experiment_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lm-experiment",
        help="reproduce Ibrahim et al. 2024 at small scale (replay x schedule, en -> de)",
        description="Small-scale reproduction of 'Simple and Scalable Strategies to Continually Pre-train "
        "LLMs' on fortunes en -> de: replay 0 / 5 / 25 percent with re-warm + re-decay, infinite and WSD "
        "schedules, and re-training on the union as the reference. Writes a table and plots.",
    )
    p.add_argument("--corpora", default=",".join(DEFAULTS.corpora), help="the two (or more) phases")
    p.add_argument("--replays", default="0,0.05,0.25", help="replay fractions for the re-warm/re-decay runs")
    p.add_argument("--quick", action="store_true", help="a few steps per run (smoke test)")
    _add_run_flags(p, experiment=True)
    # set per run by run_experiment; declared so that config_from_args reads the same namespace for both commands
    p.set_defaults(
        func=run_lm_experiment,
        replay=DEFAULTS.replay,
        schedule=DEFAULTS.schedule,
        json_path=None,
        eval_corpora="",
        probes=0,
        probe_step=None,
        probe_len=DEFAULTS.probe_len,
    )
    return p


def run_lm_experiment(args: argparse.Namespace) -> int:
    """Run `lifelong lm-experiment` (``--quick``: 20 updates per phase, evaluated every 10)."""
    if args.quick:
        args.steps_per_phase, args.eval_every = 20, 10
    try:
        replays = [float(r) for r in args.replays.split(",")]
    except ValueError:
        raise LifelongError(f"--replays '{args.replays}' is not a comma list of numbers") from None
    print(run_experiment(config_from_args(args), replays))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lifelong.lm", description="lifelong LM continual pre-training"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_lm_parser(sub)
    add_lm_experiment_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LifelongError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
