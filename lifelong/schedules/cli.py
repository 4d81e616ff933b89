"""Command-line pieces for `lifelong schedule NAME ...` and `lifelong list` (wired in by lifelong/cli.py).

Flags come from the schedules' Param declarations (`decay_start` -> `--decay-start`), so a new schedule
gets its flags, help and validation for free.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.schedules.catalog import SCHEDULES, make_schedule
from lifelong.schedules.refined import Refined
from lifelong.schedules.wsd import WSDS
from lifelong.tracking.files import save_figure_atomic, write_text_atomic

DEFAULT_STEPS = 1000
MAX_STEPS = 10**7  # rates are computed into a list; a bound keeps a typo from filling the memory
PLOT_FORMATS = (".png", ".pdf", ".svg")


def describe_schedules() -> list[tuple[str, str, dict[str, Param]]]:
    """(name, one-line description, declared parameters) for every schedule, sorted by name."""
    return [
        (name, (cls.__doc__ or "").strip().splitlines()[0], dict(cls.params))
        for name, cls in SCHEDULES.items()
    ]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_schedules() -> str:
    """Every schedule with its flags, defaults and allowed ranges (for --help and `lifelong list`)."""
    lines = []
    for name, text, params in describe_schedules():
        lines.append(f"  {name}: {text}")
        for key, p in params.items():
            allowed = "" if isinstance(p.default, tuple) else f" {p.describe_range()}"
            lines.append(f"      --{key.replace('_', '-')} (default {_show(p.default)}){allowed}: {p.help}")
    return "\n".join(lines)


def _flags() -> dict[str, tuple[str, list[str]]]:
    """Parameter name -> (its most common help text, schedules that use it)."""
    helps: dict[str, Counter[str]] = {}
    users: dict[str, list[str]] = {}
    for name, _, params in describe_schedules():
        for key, p in params.items():
            helps.setdefault(key, Counter())[p.help] += 1
            users.setdefault(key, []).append(name)
    return {key: (helps[key].most_common(1)[0][0], users[key]) for key in users}


def add_schedule_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `schedule` subcommand to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "schedule",
        help="compute, save and plot a learning-rate schedule",
        description="Compute the absolute learning rate at steps 0..N-1 of schedule NAME; "
        'write it as JSON {"lr": [...]} and/or plot it.',
        epilog="schedules and their parameters:\n" + format_schedules(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("name", metavar="NAME", help="schedule name: " + ", ".join(SCHEDULES))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="number of steps N (run length; default 1000, or the record's length for refined)",
    )
    parser.add_argument("--json", metavar="PATH", help='write {"lr": [N absolute rates]} to PATH')
    parser.add_argument("--plot", metavar="PATH", help="draw the schedule to a PNG file")
    for key, (text, users) in _flags().items():
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            metavar="VALUE",
            default=argparse.SUPPRESS,
            help=f"{text} [{', '.join(users)}]",
        )
    parser.set_defaults(handler=run_schedule_command)
    return parser


def _plot(path: str, lrs: list[float], title: str, marks: list[int]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(range(len(lrs)), lrs, lw=1.5)
    for step in marks:
        ax.axvline(step, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="step", ylabel="learning rate")
    ax.set_title(textwrap.fill(title, 100), fontsize=8)
    ax.grid(alpha=0.3)
    save_figure_atomic(fig, path, dpi=100)


def check_output(path: str | None, flag: str, suffixes: tuple[str, ...] | None) -> None:
    """Refuse an output path that is a directory, lies under a file, or has an unknown plot format."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise LifelongError(f"{flag} {p} is a directory; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise LifelongError(f"{flag} {p}: unknown format {p.suffix or '(none)'}; use {', '.join(suffixes)}")
    for q in p.parents:
        if q.exists():
            if not q.is_dir():
                raise LifelongError(f"{flag} {p}: {q} is a file, not a directory")
            break


def run_schedule_command(args: argparse.Namespace) -> int:
    """Run `lifelong schedule`: build the schedule, write --json / --plot, print a summary. Returns 0.

    Bad input raises LifelongError (one line naming the parameter) for the caller to print.
    """
    given = {key: getattr(args, key) for key in _flags() if hasattr(args, key)}
    check_output(args.json, "--json", None)
    check_output(args.plot, "--plot", PLOT_FORMATS)
    if args.steps is None:
        unbound = make_schedule(args.name, **given)
        args.steps = len(unbound.grad_norms) if isinstance(unbound, Refined) else DEFAULT_STEPS
    if not 1 <= args.steps <= MAX_STEPS:
        raise LifelongError(f"steps={args.steps} is out of range: allowed [1, {MAX_STEPS}]")
    schedule = make_schedule(args.name, total_steps=args.steps, **given)
    lrs = schedule.lrs(args.steps)
    if not all(math.isfinite(v) and v >= 0 for v in lrs):
        raise LifelongError(
            f"schedule {args.name} produced a negative or non-finite rate; check its parameters"
        )
    settings = " ".join(f"{k}={_show(v)}" for k, v in schedule.values().items() if k != "grad_norms")
    try:
        if args.json:
            write_text_atomic(json.dumps({"lr": lrs}), args.json)
        if args.plot:
            marks = [s for s in schedule.pit_stops if s < args.steps] if isinstance(schedule, WSDS) else []
            _plot(args.plot, lrs, f"{args.name}: {settings}", marks)
    except OSError as err:
        raise LifelongError(f"cannot write {err.filename or args.json or args.plot}: {err.strerror}") from None
    print(f"{args.name} ({settings}), {args.steps} steps")
    print(f"  lr[0]={lrs[0]:.6g}  max={max(lrs):.6g}  min={min(lrs):.6g}  lr[{args.steps - 1}]={lrs[-1]:.6g}")
    for label, path in (("json", args.json), ("plot", args.plot)):
        if path:
            print(f"  wrote {label}: {path}")
    return 0
