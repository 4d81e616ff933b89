"""Static HTML reports: one self-contained page per run or per comparison.

The page holds its tables and its figures (PNG, embedded as base64 data URIs) and a little CSS, no script and
no external resource, so it opens offline in any browser and can be mailed or archived as one file. The PNGs are
also left beside it in `plots/`. A report renders whatever the run recorded and says on the page what is missing.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.evaluation.continual import curve_from_rows, curve_metrics, mean_seen_accuracy
from lifelong.evaluation.metrics import summarize
from lifelong.report import plots, tables
from lifelong.tracking.files import write_text_atomic
from lifelong.tracking.store import DB_NAME, RunStore, find_runs, scenario_of
from lifelong.training.runner import mean_std
from lifelong.tuning.results import TUNE_NAME

REPORT_NAME = "report.html"
COMPARE_NAME = "compare.json"
PLOTS_DIR = "plots"
DEFAULT_ROOTS = ("runs", ".")

MATRIX_METRICS = ("final_accuracy", "average_incremental_accuracy", "bwt", "fwt", "forgetting")
CURVE_METRICS = ("min_acc", "wc_acc", "wf10", "wf100", "wp10", "wp100", "lca")
ONLINE_METRICS = ("a_auc", "a_last", "online_accuracy")
COST_METRICS = ("train_seconds", "samples_per_second", "peak_rss_mb")
METRIC_ORDER = MATRIX_METRICS + ONLINE_METRICS + CURVE_METRICS + COST_METRICS
LABELS = {
    "final_accuracy": "final accuracy", "average_incremental_accuracy": "average incremental accuracy",
    "bwt": "backward transfer (BWT)", "fwt": "forward transfer (FWT)", "forgetting": "average forgetting",
    "min_acc": "min-ACC", "wc_acc": "WC-ACC", "wf10": "WF(10)", "wf100": "WF(100)", "wp10": "WP(10)",
    "wp100": "WP(100)", "lca": "LCA(10)", "a_auc": "anytime accuracy (A_auc)", "a_last": "A_last",
    "online_accuracy": "online (prequential) accuracy", "train_seconds": "training time (s)",
    "samples_per_second": "samples / s", "peak_rss_mb": "peak memory (MiB)",
}
COST_LABELS = {LABELS[k] for k in COST_METRICS}
KEY_OF_LABEL = {v: k for k, v in LABELS.items()} | {"gap": "gap", "mean stability gap": "gap"}
FWT_NOTE = ("Forward transfer (FWT) is not shown: in a class-incremental stream a model never predicts classes it "
            "was not trained on, so FWT is minus the untrained accuracy for every method.")
NO_CURVE = "No continual-evaluation curve recorded (run with --eval-every K to evaluate every K steps)."

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
     padding:0 1rem;color:#1d2330;line-height:1.45}
h1{font-size:1.55rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d8dce5;
     padding-bottom:.25rem} .sub{color:#5a6275;margin-top:0}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d8dce5;padding:.28rem .6rem;text-align:right}
th{background:#f1f3f8} td.k,th.k{text-align:left} td.na{color:#9aa1b1}
.missing{background:#fff6e0;border-left:4px solid #e0a800;padding:.5rem .8rem;margin:.6rem 0}
.status{display:inline-block;padding:.1rem .5rem;border-radius:.6rem;font-size:.85rem;background:#e6f4ea}
.status.failed{background:#fde8e8} .status.running{background:#fff6e0}
figure{margin:1rem 0} figure img{max-width:100%;height:auto;border:1px solid #eceef3}
figcaption{color:#5a6275;font-size:.85rem} footer{margin-top:3rem;color:#8a91a3;font-size:.8rem}
"""


# --- finding what to report on ---------------------------------------------------------------------------
def target_kind(path: Path) -> str | None:
    """"run", "comparison", "tuning" (a `lifelong tune` results directory) or None for a directory."""
    if (path / COMPARE_NAME).is_file():
        return "comparison"
    if (path / DB_NAME).is_file():
        return "run"
    if (path / TUNE_NAME).is_file():
        return "tuning"
    return None


def _tuning_dirs_under(path: Path) -> list[Path]:
    return sorted(p.parent for p in path.glob(f"*/{TUNE_NAME}"))


def report_target(path_or_id: str | os.PathLike, roots: Iterable[str | os.PathLike] = DEFAULT_ROOTS) -> Path:
    """The run, comparison or tuning directory meant by a path (directory, its run.sqlite / compare.json /
    result.json / tune.json) or by a run id: the name (or a unique prefix of the name) of such a directory under
    `roots`.

    Raises LifelongError, in one line, when nothing matches or an id is ambiguous."""
    raw = str(path_or_id)
    path = Path(raw)
    if path.is_file() and path.name in (DB_NAME, COMPARE_NAME, "result.json", TUNE_NAME):
        path = path.parent
    if path.is_dir():
        if target_kind(path) is None:
            tuned = _tuning_dirs_under(path)
            hint = (f"; tuning results under it: {', '.join(str(p) for p in tuned[:5])}"
                    f"{' ...' if len(tuned) > 5 else ''} (give one)") if tuned else ""
            runs = sorted(d.name for d in path.iterdir() if (d / DB_NAME).is_file())
            if runs and not hint:  # a comparison stopped before its compare.json: its runs are there
                hint = (f"; it holds runs ({', '.join(runs[:4])}{' ...' if len(runs) > 4 else ''}) of a comparison "
                        f"that did not finish: run the same compare command with --out {path} to finish it, or "
                        "report one of its runs")
            raise LifelongError(f"{path} holds neither a run ({DB_NAME}), a comparison ({COMPARE_NAME}) nor tuning "
                                f"results ({TUNE_NAME}){hint}")
        return path
    if path.exists():
        raise LifelongError(f"{path} is not a run or comparison directory")
    roots = [Path(r) for r in roots]
    candidates = set(find_runs(roots))
    for root in roots:
        if root.is_dir():
            candidates.update(p.parent for level in ("*", "*/*") for p in root.glob(f"{level}/{COMPARE_NAME}"))
            candidates.update(_tuning_dirs_under(root))
    exact = sorted({c.resolve() for c in candidates if c.name == raw})
    prefix = sorted({c.resolve() for c in candidates if c.name.startswith(raw)})
    found = exact or prefix
    if len(found) == 1:
        return found[0]
    where = ", ".join(str(r) for r in roots)
    if not found:
        raise LifelongError(f"unknown run '{raw}': no such path, and no run or comparison named so under {where}; "
                            "'lifelong runs' lists stored runs")
    names = ", ".join(str(p) for p in found[:5]) + (" ..." if len(found) > 5 else "")
    raise LifelongError(f"run id '{raw}' is ambiguous ({len(found)} matches: {names}); give the directory path")


def write_report(path_or_id: str | os.PathLike, out: str | os.PathLike | None = None,
                 roots: Iterable[str | os.PathLike] = DEFAULT_ROOTS, notes: list[str] | None = None) -> Path:
    """Resolve a run / comparison (see `report_target`) and write its report; returns the HTML path."""
    target = report_target(path_or_id, roots)
    if target_kind(target) == "comparison":
        return write_comparison_report(target, out, notes)
    if target_kind(target) == "tuning":
        from lifelong.report.tuning import write_tuning_report

        return write_tuning_report(target, out, notes)
    return write_run_report(target, out, notes)


# --- HTML helpers --------------------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, key: str = "") -> str:
    """A number for a table cell in the shared convention (lifelong.report.tables): accuracy metrics (by key or
    label) in percent, costs as plain numbers, other floats with 4 significant digits; '—' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value) if not isinstance(value, (dict, list)) else json.dumps(value)
    key = KEY_OF_LABEL.get(key, key)
    if key in tables.PERCENT or key in tables.COST:
        return tables.metric(value, key)
    if isinstance(value, int):
        return str(value)
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def cell(value: Any, key: str = "") -> str:
    text = fmt(value, key)
    return f'<td class="na">{text}</td>' if text == "—" else f"<td>{esc(text)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "", cls: str = "") -> str:
    """`rows` hold ready-made <td>/<th> cells."""
    head = "".join(f'<th class="k">{esc(h)}</th>' if i == 0 else f"<th>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(items: Iterable[tuple[str, Any]], cls: str = "kv", header: Sequence[str] = ("key", "value")) -> str:
    rows = [[f'<td class="k">{esc(k)}</td>', cell(v, k)] for k, v in items]
    return table(header, rows, cls=cls)


def missing(text: str) -> str:
    """A visible note on the page about something the run did not record."""
    return f'<p class="missing">{esc(text)}</p>'


def _noting(notes: list[str] | None):
    def note(text: str) -> str:
        if notes is not None:
            notes.append(text)
        return missing(text)
    return note


def figure(png: Path, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"sub\">{subtitle}</p>" + "\n".join(sections)
            + f"<footer>Written by lifelong report on {stamp}.</footer></body></html>\n")


def _write(text: str, out: Path) -> Path:
    try:
        return write_text_atomic(text, out)
    except OSError as err:
        raise LifelongError(f"cannot write the report {out}: {err.strerror}") from None


def check_output(out: Path) -> Path:
    """Refuse a report path that is a directory or lies under a file, and a plots/ folder that is a symbolic
    link (a planted link must never make the report write outside the run directory)."""
    if out.is_dir():
        raise LifelongError(f"report output {out} is a directory; give a file name such as {out / REPORT_NAME}")
    for q in out.parents:
        if q.exists():
            if not q.is_dir():
                raise LifelongError(f"report output {out}: {q} is a file, not a directory")
            if not os.access(q, os.W_OK | os.X_OK):
                raise LifelongError(f"report output {out}: {q} is not writable")
            break
    plots_dir = out.parent / PLOTS_DIR
    if plots_dir.is_symlink() or (plots_dir.exists() and not plots_dir.is_dir()):
        raise LifelongError(f"{plots_dir} is a symbolic link or a file; refusing to write plots through it "
                            "(remove it, or give another -o)")
    return out


# --- reading a run -------------------------------------------------------------------------------------------
def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything a report shows about one run, as plain data (missing parts are None or empty)."""
    store = RunStore.open(run_dir)
    try:
        meta = store.checked_meta()
        rows = store.accuracy_rows()
        curve_rows = store.curve()
        loss = store.scalars("loss")
        events = store.events()
    except (sqlite3.DatabaseError, ValueError, TypeError) as err:
        raise LifelongError(f"run database of {run_dir} is damaged ({err}); its report cannot be written") from None
    finally:
        store.close()
    result = meta.get("result") or {}
    if not result and (Path(run_dir) / "result.json").is_file():
        try:
            result = json.loads((Path(run_dir) / "result.json").read_text())
        except (OSError, ValueError):
            result = {}
    result = result if isinstance(result, dict) else {}
    config = meta["config"]
    trained = [rows[i] for i in sorted(rows) if i >= 0]
    width = max((len(r) for r in rows.values()), default=0)
    curve = curve_from_rows(curve_rows, width or None) if curve_rows else None
    boundaries = list(meta.get("boundaries") or [])
    metrics: dict[str, Any] = {}
    learned_at = result.get("learned_at")  # streams with eval sets: columns are sets, not experiences
    learned_at = learned_at if isinstance(learned_at, list) and trained and len(learned_at) == len(trained[-1]) \
        else None
    if trained and learned_at is None and meta.get("status") != "finished" and len(trained) < len(trained[0]):
        k = len(trained)  # an unfinished run: the metrics of the experiences trained so far (row i after i)
        initial = rows.get(-1)
        metrics.update(summarize([r[:k] for r in trained], initial[:k] if initial else None))
    elif trained:
        metrics.update(summarize(trained, rows.get(-1), learned_at=learned_at))
    if curve:
        metrics.update(curve_metrics(curve, boundaries, learned_at=learned_at))
    for key in ONLINE_METRICS:
        if key in result:
            metrics[key] = result.get(key)
    for key in COST_METRICS:
        metrics[key] = result.get(key)
    return {"dir": Path(run_dir), "meta": meta, "config": config, "status": meta.get("status", "unknown"),
            "result": result, "initial": rows.get(-1), "matrix": trained, "curve": curve,
            "boundaries": boundaries, "loss": loss if loss[0] else None, "events": events, "metrics": metrics,
            "strategy": config.get("strategy", result.get("strategy", "?")),
            "seed": config.get("seed", result.get("seed")), "scenario": scenario_of(meta)}


def run_stream_name(run: Mapping[str, Any]) -> str | None:
    """The scenario name that tells the stream's kind, or None for a run on the user's own data."""
    data = run["meta"].get("data") or {}
    return run["config"].get("scenario") if data.get("source", "scenario") == "scenario" else None


def matrix_table(matrix: Sequence[Sequence[float]], initial: Sequence[float] | None) -> str:
    width = max(len(r) for r in matrix)
    header = ["after", *(f"E{j}" for j in range(width))]
    rows = []
    if initial is not None:
        rows.append(['<th class="k">before training</th>', *(cell(v, "accuracy") for v in initial)])
    for i, r in enumerate(matrix):
        rows.append([f'<th class="k">E{i}</th>', *(cell(v, "accuracy") for v in r)])
    return table(header, rows, caption="R[i][j]: accuracy on experience j after training experience i",
                 cls="matrix")


def gaps_table(gaps: Sequence[Mapping[str, Any]]) -> str:
    keys = ("experience", "switch_step", "before", "min", "min_step", "end", "size", "duration", "recovery")
    header = ["into experience", "at step", "before", "min", "min at step", "end", "gap size", "duration (steps)",
              "recovery"]
    rows = [[f'<td class="k">E{g["experience"]}</td>', *(cell(g[k], k) for k in keys[1:])] for g in gaps]
    return table(header, rows, caption="Stability gap per task switch, on the mean accuracy over the old experiences",
                 cls="gaps")


def run_sections(run: Mapping[str, Any], plot_dir: Path, notes: list[str] | None = None) -> list[str]:
    missing = _noting(notes)
    sections = []
    status = run["status"]
    if status != "finished":
        error = run["meta"].get("error")
        why = f" It stopped with: {error}" if error else ""
        so_far = (" Its metrics cover the experiences trained so far." if run["matrix"]
                  and len(run["matrix"]) < len(run["matrix"][0]) else "")
        sections.append(missing(f"This run's status is '{status}': the report shows what was recorded so far."
                                f"{so_far}{why}"))
    m = run["metrics"]
    show_fwt = tables.fwt_meaningful(run_stream_name(run), [run["matrix"]] if run["matrix"] else [])
    present = [(LABELS.get(k, k), m.get(k)) for k in METRIC_ORDER if k in m and (k != "fwt" or show_fwt)]
    gap = tables.mean_gap(m)
    if gap is not None:
        present.append(("mean stability gap", gap))
    sections.append("<h2>Results</h2>" + (kv_table(present, "results", ("metric", "value")) if present else
                                          missing("No results recorded yet (no experience finished).")))
    if not show_fwt and "fwt" in m:
        sections.append(f'<p class="sub">{esc(FWT_NOTE)}</p>')

    sections.append("<h2>Accuracy matrix</h2>")
    if run["matrix"]:
        png = plots.plot_accuracy_matrix(run["matrix"], plot_dir / "accuracy_matrix.png")
        sections.append(matrix_table(run["matrix"], run["initial"]) + figure(png, "accuracy matrix heatmap"))
    else:
        sections.append(missing("No accuracy matrix recorded (the run did not finish its first experience)."))

    sections.append("<h2>Continual evaluation</h2>")
    curve = run["curve"]
    if curve:
        png = plots.plot_accuracy_curves(curve["steps"], curve["accuracy"], run["boundaries"],
                                         plot_dir / "accuracy_curves.png", mean=mean_seen_accuracy(curve))
        sections.append(figure(png, "accuracy against training step per experience",
                               "Accuracy on every seen experience against the global step; dashed lines mark "
                               "task switches. A dip right after a switch is the stability gap."))
        sections.append(kv_table([(LABELS[k], m.get(k)) for k in CURVE_METRICS] +
                                 [("evaluations", m.get("evaluations"))], "continual", ("metric", "value")))
        if not run["boundaries"]:
            sections.append(missing("No task boundaries recorded: metrics about previous tasks are unavailable."))
        if m.get("stability_gaps"):
            sections.append(gaps_table(m["stability_gaps"]))
    else:
        sections.append(missing(NO_CURVE))

    sections.append("<h2>Training loss</h2>")
    if run["loss"]:
        png = plots.plot_loss({run["strategy"]: run["loss"]}, plot_dir / "loss.png", run["boundaries"])
        sections.append(figure(png, "training loss against step"))
    else:
        sections.append(missing("No training loss recorded."))

    sections.append("<h2>Configuration</h2>")
    if run["config"]:
        sections.append(kv_table(sorted(run["config"].items())))
    else:
        sections.append(missing("No configuration recorded."))
    hp = run["result"].get("hparams")
    if hp:
        sections.append("<h3>Strategy hyperparameters</h3>" + kv_table(sorted(hp.items())))
    env = run["meta"].get("env")
    if env:
        sections.append("<h3>Environment</h3>" + kv_table(sorted(env.items())))
    if run["events"]:
        rows = [[f'<td class="k">{esc(e["kind"])}</td>',
                 f"<td>{esc(dt.datetime.fromtimestamp(e['time'], dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S'))}"
                 "</td>",
                 f'<td class="k">{esc(json.dumps({k: v for k, v in e.items() if k not in ("kind", "time")}))}</td>']
                for e in run["events"][-50:]]
        sections.append("<h3>Events</h3>" + table(["event", "time (UTC)", "details"], rows, cls="events"))
    return sections


def write_run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                     notes: list[str] | None = None) -> Path:
    """Write the report of one run (default `run_dir/report.html`, PNGs in `run_dir/plots/`); returns its path.

    What the run lacks (no curve, no loss, ...) is said on the page and appended to `notes` if given."""
    run_dir = Path(run_dir)
    if _kind(run_dir) == "lm":
        return write_lm_report(run_dir, out, notes)
    run = read_run(run_dir)
    out = check_output(Path(out) if out is not None else run_dir / REPORT_NAME)
    sections = run_sections(run, out.parent / PLOTS_DIR, notes)
    seed = f", seed {run['seed']}" if run["seed"] is not None else ""
    subtitle = (f"Run <code>{esc(run_dir)}</code> &middot; status "
                f"<span class=\"status {esc(run['status'])}\">{esc(run['status'])}</span>")
    return _write(page(f"{run['strategy']} on {run['scenario']}{seed}", subtitle, sections), out)


# --- language-model runs ------------------------------------------------------------------------------------
def _kind(run_dir: Path) -> str:
    store = RunStore.open(run_dir)
    try:
        return str(store.meta().get("kind", "cl"))
    finally:
        store.close()


def read_lm_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """An LM run's records: config, status, result summary, boundaries, train loss and held-out loss per
    domain (`eval_loss/<domain>` scalars)."""
    from lifelong.lm.store import EVAL_PREFIX

    store = RunStore.open(run_dir)
    try:
        meta = store.checked_meta()
        names = [r[0] for r in store.conn.execute("SELECT DISTINCT name FROM scalars WHERE name LIKE ? ORDER BY "
                                                  "name", (EVAL_PREFIX + "%",))]
        evals = {n[len(EVAL_PREFIX):]: store.scalars(n) for n in names}
        loss = store.scalars("loss")
        lr = store.scalars("lr")
    except sqlite3.DatabaseError as err:
        raise LifelongError(f"run database of {run_dir} is damaged ({err}); its report cannot be written") from None
    finally:
        store.close()
    result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    return {"meta": meta, "config": meta["config"], "status": meta.get("status", "unknown"), "result": result,
            "boundaries": list(meta.get("boundaries") or []), "evals": evals, "loss": loss if loss[0] else None,
            "lr": lr if lr[0] else None}


def lm_sections(run: Mapping[str, Any], plot_dir: Path, notes: list[str] | None = None) -> list[str]:
    missing = _noting(notes)
    sections = []
    if run["status"] != "finished":
        sections.append(missing(f"This run's status is '{run['status']}': the report shows what was recorded so far."))
    res = run["result"]
    sections.append("<h2>Results (held-out loss per domain)</h2>")
    final = res.get("final_loss") or {}
    if final:
        own, forgot = res.get("loss_after_own_phase") or {}, res.get("forgetting") or {}
        rows = [[f'<td class="k">{esc(n)}</td>', cell(own.get(n)), cell(final.get(n)),
                 cell(forgot.get(n))] for n in final]
        sections.append(table(["domain", "after its own phase", "final", "forgetting (final - own)"], rows,
                              cls="lm-results"))
        sections.append(kv_table([("mean final loss", res.get("mean_final_loss")),
                                  ("tokens / s", res.get("tokens_per_second")),
                                  ("training time (s)", res.get("train_seconds"))], "lm-cost", ("metric", "value")))
    else:
        sections.append(missing("No final losses recorded yet (the run did not finish)."))
    sections.append("<h2>Held-out loss per domain</h2>")
    if run["evals"]:
        png = plots.plot_loss(run["evals"], plot_dir / "eval_loss.png", run["boundaries"],
                              title="Held-out loss per domain", smooth=1)
        sections.append(figure(png, "held-out loss per domain against the update step",
                               "Loss on each domain's held-out text at every evaluation; dashed lines mark phase "
                               "switches (a domain's loss rising after its phase is forgetting)."))
    else:
        sections.append(missing("No held-out evaluations recorded."))
    sections.append("<h2>Training loss</h2>")
    if run["loss"]:
        png = plots.plot_loss({"training loss": run["loss"]}, plot_dir / "loss.png", run["boundaries"])
        sections.append(figure(png, "training loss against step"))
    else:
        sections.append(missing("No training loss recorded."))
    sections.append("<h2>Configuration</h2>" + kv_table(sorted(run["config"].items())))
    env = run["meta"].get("env")
    if env:
        sections.append("<h3>Environment</h3>" + kv_table(sorted(env.items())))
    return sections


def write_lm_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                    notes: list[str] | None = None) -> Path:
    """The report of a `lifelong lm` run: loss per domain (table and curves), training loss, configuration."""
    run_dir = Path(run_dir)
    run = read_lm_run(run_dir)
    out = check_output(Path(out) if out is not None else run_dir / REPORT_NAME)
    sections = lm_sections(run, out.parent / PLOTS_DIR, notes)
    cfg = run["config"]
    corpora = " → ".join(cfg.get("corpora") or []) if isinstance(cfg.get("corpora"), list) else "?"
    subtitle = (f"Language-model run <code>{esc(run_dir)}</code> &middot; status "
                f"<span class=\"status {esc(run['status'])}\">{esc(run['status'])}</span>")
    return _write(page(f"{cfg.get('model', '?')} on {corpora}, seed {cfg.get('seed', '?')}", subtitle, sections), out)


# --- comparisons ---------------------------------------------------------------------------------------------
def read_comparison(compare_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(compare_dir) / COMPARE_NAME
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise LifelongError(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise LifelongError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results", []), list):
        raise LifelongError(f"{path} is not a comparison file (expected an object with 'results')")
    return data


def _runs_by_key(compare_dir: Path) -> dict[tuple[str, Any], tuple[Path, dict[str, Any]]]:
    """(strategy, seed) -> (run directory, its meta), for the runs stored under a comparison directory."""
    found = {}
    for d in find_runs([compare_dir]):
        try:
            store = RunStore.open(d)
            try:
                meta = store.checked_meta()
            finally:
                store.close()
        except LifelongError:
            continue
        cfg = meta["config"]
        found.setdefault((str(cfg.get("strategy")), cfg.get("seed")), (d, meta))
    return found


def _mean_lists(lists: Sequence[Sequence[float | None]]) -> list[float | None]:
    out = []
    for vals in zip(*lists, strict=True):
        xs = [v for v in vals if v is not None]
        out.append(sum(xs) / len(xs) if len(xs) == len(vals) else None)
    return out


def _band(lists: Sequence[Sequence[float | None]]) -> tuple[list[float | None], list[float | None]]:
    """Mean - std and mean + std (population) at each point where every list has a value."""
    lo, hi = [], []
    for vals in zip(*lists, strict=True):
        mean, std, n = tables.mean_std([v for v in vals if v is not None])
        ok = n == len(vals) and mean is not None
        lo.append(mean - (std or 0.0) if ok else None)
        hi.append(mean + (std or 0.0) if ok else None)
    return lo, hi


def _summarise(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std per strategy (`runner.mean_std`, as `lifelong compare` summarises), for comparison files
    written without a summary; over every metric the report shows, not only `runner.SUMMARY_METRICS`."""
    rows = []
    for name, rs in _group(results).items():
        row: dict[str, Any] = {"strategy": name}
        for k in METRIC_ORDER:
            row[f"{k}_mean"], row[f"{k}_std"] = mean_std([r[k] for r in rs if isinstance(r.get(k), (int, float))])
        rows.append(row)
    return rows


def comparison_sections(data: Mapping[str, Any], compare_dir: Path, plot_dir: Path,
                        notes: list[str] | None = None) -> list[str]:
    missing = _noting(notes)
    results = data.get("results") or []
    summary = data.get("summary") or _summarise(results)
    sections = []
    if not results:
        sections.append(missing("This comparison holds no results."))

    matrices = [r["accuracy_matrix"] for r in results if r.get("accuracy_matrix")]
    show_fwt = tables.fwt_meaningful(data.get("scenario"), matrices)
    hidden = set() if show_fwt else {"fwt"}
    metrics = [k for k in METRIC_ORDER if k not in hidden and any(row.get(f"{k}_mean") is not None for row in summary)]
    extra = sorted({k[:-5] for row in summary for k in row if k.endswith("_mean")} - set(metrics) - set(METRIC_ORDER))
    metrics += [k for k in extra if any(isinstance(row.get(f"{k}_mean"), (int, float)) for row in summary)]
    if any(tables.mean_gap(r) is not None for r in results):
        metrics.insert(metrics.index("wc_acc") + 1 if "wc_acc" in metrics else len(metrics), "gap")
    sections.append("<h2>Summary (mean &plusmn; std over seeds)</h2>")
    if summary and metrics:
        counted = {row["strategy"]: row for row in tables.summary_rows(results, metrics)} if results else {}
        rows = []
        for row in summary:
            name = str(row.get("strategy"))
            cells = [f'<td class="k">{esc(name)}</td>']
            for k in metrics:
                if name in counted:  # from the results: the spread only over more than one seed
                    mean, std, n = counted[name][k]
                else:
                    mean, std, n = row.get(f"{k}_mean"), row.get(f"{k}_std"), None
                text = tables.mean_pm(mean, std, KEY_OF_LABEL.get(k, k), n) if k in tables.PERCENT or \
                    k in tables.COST else fmt(mean, k) + (f" ± {fmt(std, k)}" if n != 1 and std else "")
                cells.append(f"<td>{esc(text)}</td>" if mean is not None else '<td class="na">—</td>')
            rows.append(cells)
        labels = {**LABELS, "gap": "mean stability gap"}
        sections.append(table(["strategy", *(labels.get(k, k) for k in metrics)], rows, cls="summary"))
        if not show_fwt and any(row.get("fwt_mean") is not None for row in summary):
            sections.append(f'<p class="sub">{esc(FWT_NOTE)}</p>')
        bar_metrics = plots.comparison_metrics(summary)
        if bar_metrics:
            png = plots.plot_comparison(summary, plot_dir / "comparison.png", bar_metrics)
            sections.append(figure(png, "comparison chart across strategies",
                                   "Accuracies (left) and forgetting (right), in percent; error bars: std over "
                                   "seeds."))
    else:
        sections.append(missing("No summary metrics recorded."))

    sections.append("<h2>All results</h2>")
    if results:
        keys = [k for k in METRIC_ORDER if k not in hidden and any(r.get(k) is not None for r in results)]
        rows = [[f'<td class="k">{esc(r.get("strategy"))}</td>', cell(r.get("seed")),
                 *(cell(r.get(k), k) for k in keys)] for r in results]
        sections.append(table(["strategy", "seed", *(LABELS.get(k, k) for k in keys)], rows, cls="results"))

    runs = _runs_by_key(compare_dir)
    first_run: dict[str, Path] = {}
    boundaries: list[int] | None = None  # the longest list: a joint-training reference has a single experience
    for (name, _), (d, meta) in sorted(runs.items(), key=lambda kv: str(kv[0])):
        first_run.setdefault(name, d)
        b = meta.get("boundaries") or []
        if len(b) > len(boundaries or []):
            boundaries = b

    sections.append("<h2>Continual evaluation</h2>")
    curves: dict[str, tuple[list[int], list[float | None]]] = {}
    by_strategy: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        if r.get("curve") and r["curve"].get("steps"):
            by_strategy.setdefault(str(r.get("strategy")), []).append(r["curve"])
    bands: dict[str, tuple[list[float | None], list[float | None]]] = {}
    for name, cs in by_strategy.items():
        same = [c for c in cs if c["steps"] == cs[0]["steps"]]
        per_seed = [mean_seen_accuracy(c) for c in same]
        curves[name] = (cs[0]["steps"], _mean_lists(per_seed))
        if len(per_seed) > 1:
            bands[name] = _band(per_seed)
    if curves:
        png = plots.plot_mean_accuracy_curves(curves, plot_dir / "mean_accuracy_curves.png", boundaries, bands=bands)
        sections.append(figure(png, "mean accuracy against step per strategy",
                               "Mean accuracy over the experiences seen so far, averaged over seeds (shaded: mean "
                               "± std over seeds); dashed lines mark task switches."))
    else:
        sections.append(missing(NO_CURVE))

    sections.append("<h2>Training loss</h2>")
    losses = {}
    for name, d in first_run.items():
        store = RunStore.open(d)
        try:
            steps, values = store.scalars("loss")
        finally:
            store.close()
        if steps:
            losses[name] = (steps, values)
    if losses:
        order = [str(row.get("strategy")) for row in summary] + sorted(losses)  # same colours as the bar chart
        losses = {k: losses[k] for k in dict.fromkeys(order) if k in losses}
        png = plots.plot_loss(losses, plot_dir / "loss.png", boundaries)
        sections.append(figure(png, "training loss per strategy", "First seed of each strategy."))
    else:
        sections.append(missing(f"No training loss found (no run directories with a loss record under {compare_dir})."))

    sections.append("<h2>Accuracy matrices (mean over seeds)</h2>")
    shown = False
    for i, (name, rs) in enumerate(_group(results).items()):
        mats = [r["accuracy_matrix"] for r in rs if r.get("accuracy_matrix")]
        mats = [m for m in mats if [len(x) for x in m] == [len(x) for x in mats[0]]] if mats else []
        if not mats:
            continue
        mean = [_mean_lists([m[i] for m in mats]) for i in range(len(mats[0]))]
        png = plots.plot_accuracy_matrix(mean, plot_dir / f"accuracy_matrix_{i}.png", title=name)
        sections.append(f"<h3>{esc(name)}</h3>" + figure(png, f"accuracy matrix heatmap of {name}"))
        shown = True
    if not shown:
        sections.append(missing("No accuracy matrices recorded."))
    if runs:
        rows = [[f'<td class="k">{esc(k[0])}</td>', cell(k[1]),
                 f'<td class="k">{esc(os.path.relpath(d, compare_dir))}</td>']
                for k, (d, _) in sorted(runs.items(), key=lambda kv: str(kv[0]))]
        sections.append("<h2>Run directories</h2>" + table(["strategy", "seed", "directory"], rows, cls="runs"))
    return sections


def _group(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by.setdefault(str(r.get("strategy")), []).append(r)
    return by


def write_comparison_report(compare_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                            notes: list[str] | None = None) -> Path:
    """Write the report of a comparison directory (holding compare.json; default `compare_dir/report.html`);
    returns the HTML path. What is missing is said on the page and appended to `notes` if given."""
    compare_dir = Path(compare_dir)
    data = read_comparison(compare_dir)
    out = check_output(Path(out) if out is not None else compare_dir / REPORT_NAME)
    sections = comparison_sections(data, compare_dir, out.parent / PLOTS_DIR, notes)
    n = len(data.get("results") or [])
    strategies = ", ".join(_group(data.get("results") or []))
    subtitle = f"Comparison <code>{esc(compare_dir)}</code> &middot; {n} results &middot; {esc(strategies)}"
    return _write(page(f"Comparison on {data.get('scenario', '?')}", subtitle, sections), out)
