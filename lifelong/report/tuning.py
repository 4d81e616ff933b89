"""The report of a `lifelong tune` results directory (STORE/tune-PREFIX/, holding tune.json).

Per strategy: the best validation value and its setting, every trial (number, state, value, parameters, duration,
experiences reached, retry of), the parameter importances and the plot `lifelong.tuning.results` wrote (redrawn
from tune.json when it is missing), embedded as the other reports embed theirs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.report import html as h
from lifelong.report.tables import percent
from lifelong.tuning.results import TUNE_NAME, plot_name

TRIAL_KEYS = ("number", "state", "value", "params")


def read_tuning(tune_dir: str | os.PathLike) -> dict[str, Any]:
    """tune.json of a results directory, checked for what the report reads; a damaged file is one line."""
    path = Path(tune_dir) / TUNE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LifelongError(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise LifelongError(f"{path} is damaged (not valid JSON: {err}); rerun lifelong tune to rewrite it") from None
    problem = _shape_problem(data)
    if problem:
        raise LifelongError(f"{path} is damaged ({problem}); rerun lifelong tune to rewrite it")
    return data


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "expected an object"
    for key in ("studies", "details"):
        if not isinstance(data.get(key), list) or not all(isinstance(x, dict) for x in data[key]):
            return f"'{key}' is not a list of objects"
    for s in data["studies"]:
        if not isinstance(s.get("strategy"), str) or not isinstance(s.get("n_trials"), int):
            return "a study lacks its strategy or n_trials"
    for d in data["details"]:
        if not isinstance(d.get("strategy"), str) or not isinstance(d.get("trials"), list):
            return "a strategy's details lack their strategy or trials"
        for t in d["trials"]:
            if not isinstance(t, dict) or any(k not in t for k in TRIAL_KEYS) or not isinstance(t["params"], dict):
                return f"a trial of {d['strategy']} lacks one of {', '.join(TRIAL_KEYS)}"
        if not isinstance(d.get("importances") or {}, dict):
            return f"the importances of {d['strategy']} are not an object"
    return None


def _value(value: Any) -> str:
    return h.cell(value, "accuracy")


def _param_cell(value: Any) -> str:
    if value is None or value == "":
        return '<td class="na">—</td>'
    return h.cell(value)


def best_table(studies: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f'<td class="k">{h.esc(s["strategy"])}</td>', h.cell(s["n_trials"]), _value(s.get("best_value")),
             f'<td class="k">{h.esc(json.dumps(s["best_params"], default=str)) if s.get("best_params") else "—"}</td>']
            for s in studies]
    return h.table(["strategy", "trials in the study", "best value (validation)", "best setting"], rows,
                   cls="tune-best")


def trials_table(trials: Sequence[Mapping[str, Any]]) -> str:
    names = sorted({k for t in trials for k in t["params"]})
    rows = []
    for t in sorted(trials, key=lambda t: t["number"]):
        rows.append([f'<td class="k">{h.esc(t["number"])}</td>', f'<td class="k">{h.esc(t["state"])}</td>',
                     _value(t.get("value")), h.cell(t.get("seconds"), "train_seconds"), h.cell(t.get("steps")),
                     h.cell(t.get("retry_of")), *(_param_cell(t["params"].get(n)) for n in names)])
    return h.table(["trial", "state", "value", "duration (s)", "steps reported", "retry of", *names], rows,
                 caption="Every trial of the study; a pruned trial's value is its last report (running average "
                         "accuracy over the experiences seen)", cls="tune-trials")


def importance_table(importances: Mapping[str, float], evaluator: str) -> str:
    ordered = sorted(importances.items(), key=lambda kv: -kv[1])
    rows = [[f'<td class="k">{h.esc(k)}</td>', h.cell(v)] for k, v in ordered]
    return h.table(["parameter", "importance"], rows, caption=f"Importances ({evaluator})", cls="tune-importance")


def study_plot(detail: Mapping[str, Any], tune_dir: Path, plot_dir: Path) -> Path:
    """The plot results.py wrote for this strategy, copied beside the report when that lies elsewhere, or drawn
    again from tune.json when it is missing."""
    from lifelong.tuning.results import plot_study

    name = f"tune-{plot_name(detail['strategy'])}.png"
    stored, target = tune_dir / h.PLOTS_DIR / name, plot_dir / name
    if stored.is_file():
        if stored.resolve() != target.resolve():
            plot_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored, target)
        return target
    plot_dir.mkdir(parents=True, exist_ok=True)
    plot_study(dict(detail), target)
    return target


def tuning_sections(data: Mapping[str, Any], tune_dir: Path, plot_dir: Path,
                    notes: list[str] | None = None) -> list[str]:
    missing = h._noting(notes)
    sections = ["<h2>Best setting per strategy</h2>"]
    if data["studies"]:
        sections.append(best_table(data["studies"]))
    else:
        sections.append(missing("This tuning directory holds no study."))
    sections.append(h.kv_table([("objective", data.get("objective")), ("pruner", data.get("pruner")),
                              ("seeds", data.get("seeds")), ("storage", data.get("storage"))], "tune-setup",
                             ("setting", "value")))
    studies = {s["strategy"]: s for s in data["studies"]}
    for d in data["details"]:
        name = d["strategy"]
        s = studies.get(name, {})
        states = Counter(t["state"] for t in d["trials"])
        sections.append(f"<h2>{h.esc(name)}</h2>")
        sections.append(h.kv_table([("study", d.get("study")), ("trials in the study", s.get("n_trials")),
                                  ("trial states", ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items()))),
                                  ("best value (validation)", percent(s.get("best_value"))),
                                  ("trials run by the last invocation", d.get("new_trials")),
                                  ("its time (s)", d.get("seconds"))], "tune-study", ("", "")))
        best = s.get("best_params")
        if best:
            sections.append("<h3>Best setting</h3>" + h.kv_table(sorted(best.items()), "tune-setting",
                                                                 ("parameter", "value")))
        else:
            sections.append(missing(f"{name}: no trial completed, so there is no best setting."))
        sections.append("<h3>Trials</h3>")
        sections.append(trials_table(d["trials"]) if d["trials"] else missing(f"{name}: the study holds no trial."))
        sections.append("<h3>Parameter importances</h3>")
        if d.get("importances"):
            sections.append(importance_table(d["importances"], str(d.get("importance_evaluator", "-"))))
        else:
            sections.append(missing(f"{name}: no parameter importances "
                                    f"({d.get('importance_evaluator') or 'not computed'})."))
        png = study_plot(d, tune_dir, plot_dir)
        sections.append(h.figure(png, f"optimisation history and importances of {name}",
                               "Left: each trial's value (crosses: pruned trials at their last report) and the best "
                               "so far. Right: parameter importances."))
    return sections


def write_tuning_report(tune_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                        notes: list[str] | None = None) -> Path:
    """Write the report of a tuning results directory (default `tune_dir/report.html`); returns the HTML path."""
    tune_dir = Path(tune_dir)
    data = read_tuning(tune_dir)
    out = h.check_output(Path(out) if out is not None else tune_dir / h.REPORT_NAME)
    sections = tuning_sections(data, tune_dir, out.parent / h.PLOTS_DIR, notes)
    strategies = ", ".join(d["strategy"] for d in data["details"])
    subtitle = f"Tuning results <code>{h.esc(tune_dir)}</code> &middot; {h.esc(strategies)}"
    return h._write(h.page(f"Tuning on {data.get('scenario', '?')}", subtitle, sections), out)
