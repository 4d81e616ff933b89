"""`lifelong report RUN_OR_COMPARISON`: write the static HTML report of a run, a comparison or a tuning results
directory (`lifelong tune`'s STORE/tune-PREFIX).

lifelong/cli.py adds it with `add_report_parser(subparsers)`, which sets `func=run_report_command`.
LifelongError propagates so the main CLI prints it as one line.
"""

from __future__ import annotations

import argparse
import json
import sys

from lifelong.errors import LifelongError
from lifelong.report.html import DEFAULT_ROOTS, REPORT_NAME, report_target, target_kind, write_report


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="write a static HTML report (tables and plots) of a run, a comparison or a tuning",
        description="Write one self-contained HTML page (tables, plots embedded) that opens offline in any browser. "
                    "It shows what the run recorded and says what is missing.")
    p.add_argument("target", metavar="RUN_OR_COMPARISON",
                   help="a run directory, a comparison directory (holding compare.json), a tuning results "
                        "directory (holding tune.json, written by lifelong tune), or a run id: the name (or unique "
                        "prefix) of such a directory under --runs-root")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help=f"HTML file to write (default: RUN_OR_COMPARISON/{REPORT_NAME}; plots go to plots/ beside it)")
    p.add_argument("--runs-root", metavar="DIR", action="append", default=None,
                   help=f"where run ids are looked up (repeatable; default: {' and '.join(DEFAULT_ROOTS)})")
    p.add_argument("--json", action="store_true", help="print {kind, target, report, notes} as JSON")
    p.set_defaults(func=run_report_command)
    return p


def run_report_command(args: argparse.Namespace) -> int:
    roots = args.runs_root or DEFAULT_ROOTS
    target = report_target(args.target, roots)
    notes: list[str] = []
    try:
        path = write_report(target, args.output, roots, notes)
    except OSError as err:
        raise LifelongError(f"cannot write the report{f' to {args.output}' if args.output else ''}: "
                            f"{err.strerror or err} ({err.filename or ''})") from None
    if getattr(args, "json", False):
        print(json.dumps({"kind": target_kind(target), "target": str(target), "report": str(path), "notes": notes}))
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {path}")
    return 0
