"""Command line: ``lifelong lm`` (one continual pre-training run) and ``lifelong lm-experiment`` (the
comparison).

The lead wires :func:`add_lm_parser` / :func:`run_lm_command` and :func:`add_lm_experiment_parser` /
:func:`run_lm_experiment` into ``lifelong/cli.py``; meanwhile ``python -m lifelong.lm lm ...`` runs them.
"""

from __future__ import annotations

import argparse
import sys

from lifelong.lm.schedules import DECAY_SHAPES, SCHEDULES


def _add_run_flags(p: argparse.ArgumentParser, experiment: bool = False) -> None:
    if not experiment:
        p.add_argument(
            "--corpora",
            default="fortunes-en,fortunes-de",
            help="phases in order, comma-separated; 'a+b' trains one phase on the union. Built-in: "
            "fortunes-en, fortunes-de, fortunes-es, fortunes-it, python-stdlib; or a local file/"
            "directory, or hf:<dataset>[:config][@split] (default: %(default)s)",
        )
        p.add_argument(
            "--replay",
            type=float,
            default=0.0,
            help="fraction of every batch drawn from earlier corpora, in [0, 1) (default: 0)",
        )
        p.add_argument(
            "--schedule",
            default="cosine",
            choices=SCHEDULES,
            help="cosine/linear: re-warm + re-decay per phase; infinite; wsd (decayed branch at each "
            "phase end); constant (default: cosine)",
        )
        p.add_argument("--json", dest="json_path", default=None, help="also write the result JSON here")
        p.add_argument(
            "--eval-corpora",
            default="",
            help="extra corpora to evaluate but not train on, comma-separated (e.g. python-stdlib)",
        )
        p.add_argument("--probes", type=int, default=0, help="retention probes shown once (0: none)")
        p.add_argument("--probe-step", type=int, default=None, help="update at which the probes are shown")
        p.add_argument("--probe-len", type=int, default=64, help="tokens per probe (default: 64)")
    p.add_argument(
        "--model",
        default="tiny-llama",
        help="preset (tiny-llama, tiny-gpt2, small-llama, small-gpt2) or a local model directory",
    )
    p.add_argument(
        "--tokenizer",
        default="byte",
        help="'byte' (no files), 'bpe:<vocab size>' (trained locally) or a tokenizer directory",
    )
    p.add_argument("--steps-per-phase", type=int, default=400, help="updates per phase (default: 400)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch in sequences (default: 16)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default: 128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: 3e-3)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="LR floor / peak (default: 0.1)")
    p.add_argument(
        "--warmup-frac", type=float, default=0.05, help="warmup fraction of a phase (default: 0.05)"
    )
    p.add_argument(
        "--const-lr-ratio", type=float, default=0.5, help="infinite: constant LR / peak (default: 0.5)"
    )
    p.add_argument(
        "--branch-frac",
        type=float,
        default=0.1,
        help="wsd/infinite: decay-branch length as a fraction of a phase (default: 0.1)",
    )
    p.add_argument(
        "--decay-shape",
        default="linear",
        choices=DECAY_SHAPES,
        help="wsd: shape of the decay branches (exp and inverse need --min-lr-ratio > 0)",
    )
    p.add_argument("--eval-every", type=int, default=50, help="updates between evaluations (default: 50)")
    p.add_argument("--eval-windows", type=int, default=48, help="held-out sequences per corpus (default: 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: idle cores)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--out", dest="out_dir", default=None, help="output directory (default: runs/lm-<timestamp>)"
    )
    p.add_argument("--cache-dir", default=None, help="token cache (default: ~/.cache/lifelong/lm-tokens)")
    p.add_argument("--no-checkpoints", action="store_true", help="do not save the phase-end checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_lm_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lm",
        help="continually pre-train a causal LM over a sequence of corpora",
        description="Continually pre-train a causal language model over a sequence of corpora (phases), with "
        "replay and budget-free LR schedules; evaluates held-out loss on every corpus. Under "
        "torchrun --nproc_per_node=N it trains data-parallel.",
    )
    _add_run_flags(p)
    p.set_defaults(func=run_lm_command)
    return p


def config_from_args(args: argparse.Namespace):
    from lifelong.lm.train import LMConfig

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
        eval_windows=args.eval_windows,
        probes=args.probes,
        probe_step=args.probe_step,
        probe_len=args.probe_len,
        seed=args.seed,
        out_dir=args.out_dir,
        json_path=args.json_path,
        eval_corpora=[c for c in getattr(args, "eval_corpora", "").split(",") if c.strip()] or None,
        cache_dir=args.cache_dir,
        threads=args.threads,
        device=args.device,
        save_checkpoints=not args.no_checkpoints,
        progress=not args.no_progress,
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


def run_lm_command(args: argparse.Namespace) -> int:
    """Run `lifelong lm`; LifelongError propagates to the caller (printed as one line by the CLI)."""
    import os

    from lifelong.lm.train import run_lm

    result = run_lm(config_from_args(args))
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
    p.add_argument("--corpora", default="fortunes-en,fortunes-de", help="the two (or more) phases")
    p.add_argument("--replays", default="0,0.05,0.25", help="replay fractions for the re-warm/re-decay runs")
    p.add_argument("--quick", action="store_true", help="a few steps per run (smoke test)")
    _add_run_flags(p, experiment=True)
    p.set_defaults(func=run_lm_experiment)
    return p


def run_lm_experiment(args: argparse.Namespace) -> int:
    from lifelong.lm.experiment import run_experiment

    table = run_experiment(args)
    print(table)
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
    from lifelong.errors import LifelongError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LifelongError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
