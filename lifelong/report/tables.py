"""Numbers for people, shared by the command line and the HTML report.

One convention: accuracies and every metric made of accuracies (BWT, FWT, forgetting, min-ACC, WC-ACC, windowed
forgetting/plasticity, LCA, stability gaps) are percentages; small values keep two significant digits instead
of collapsing to zero (1e-5 -> `0.001%`, never `0.0000`); a mean over one seed has no `± 0`. Costs (seconds,
samples/s, MiB) and losses are plain numbers.

FWT is shown only where it means something: in a class-incremental stream (`split-*`, single head) a model
never predicts classes it has not been trained on, so R[j-1][j] = 0 and FWT is minus the untrained accuracy for
every method; it is left out there (`fwt_meaningful`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

PERCENT = {"final_accuracy", "average_incremental_accuracy", "bwt", "fwt", "forgetting", "min_acc", "wc_acc",
           "wf10", "wf100", "wp10", "wp100", "lca", "gap", "accuracy", "before", "min", "end", "size", "recovery",
           "a_auc", "a_last", "online_accuracy"}
SIGNED = {"bwt", "fwt"}
COST = {"train_seconds": 1, "samples_per_second": 0, "peak_rss_mb": 0}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def percent(value: float | None, signed: bool = False) -> str:
    """`0.875` -> `87.5%`; values under 0.05 % keep two significant digits (`1e-5` -> `0.001%`); None -> `-`."""
    if value is None or not is_number(value):
        return "-"
    p = 100.0 * value
    sign = "+" if signed and p > 0 else ""
    if p == 0:
        return "0.0%"
    if abs(p) < 0.05:
        return f"{sign}{p:.2g}%"
    return f"{sign}{p:.1f}%"


def plain(value: float | None, decimals: int = 1) -> str:
    """A cost or a count: thousands separated, `decimals` places; losses and other small numbers with 4
    significant digits."""
    if value is None or not is_number(value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100 or decimals == 0:
        return f"{value:,.{decimals}f}"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:,.{decimals}f}"


def metric(value: Any, key: str = "") -> str:
    """One value of metric `key` in the shared convention (percent for accuracy metrics)."""
    if key in PERCENT:
        return percent(value, key in SIGNED)
    if key in COST:
        return plain(value, COST[key])
    return plain(value) if is_number(value) else ("-" if value is None else str(value))


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean, population standard deviation (None for fewer than two values) and count."""
    xs = [float(v) for v in values if is_number(v)]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) if len(xs) > 1 else None
    return mean, std, len(xs)


def mean_pm(mean: float | None, std: float | None, key: str = "", n: int | None = None) -> str:
    """`mean ± std` in the metric's convention; the `± ...` only over more than one seed."""
    text = metric(mean, key)
    if mean is None or std is None or (n is not None and n < 2):
        return text
    spread = metric(std, key).lstrip("+")
    return f"{text} ± {spread}"


def stream_kind(scenario: str | None) -> str | None:
    """"class-incremental", "task-incremental", "domain-incremental" from a scenario name, None if unknown."""
    name = str(scenario or "")
    if name.startswith("task-split-"):
        return "task-incremental"
    if name.startswith(("split-", "online-split-", "blurry-", "si-blurry-", "imbalanced-", "hle-", "scole-",
                        "power-law-")):  # an experience's classes are untrained before it: its accuracy is 0
        return "class-incremental"
    if name.startswith(("permuted-", "rotated-")):
        return "domain-incremental"
    return None


def fwt_meaningful(scenario: str | None, matrices: Sequence[Sequence[Sequence[float]]] = ()) -> bool:
    """False for class-incremental streams; for streams of unknown kind (the user's data), False when every
    accuracy on a not-yet-trained experience is exactly 0 (the class-incremental signature), else True."""
    kind = stream_kind(scenario)
    if kind is not None:
        return kind != "class-incremental"
    ahead = [a for m in matrices for j in range(1, len(m)) if j < len(m[j - 1])
             and (a := m[j - 1][j]) is not None and a == a]  # an empty test set (NaN, None) says nothing
    return not ahead or any(a != 0 for a in ahead)


def mean_gap(result: Mapping[str, Any]) -> float | None:
    """The mean stability-gap size over a run's task switches (None without continual evaluation)."""
    sizes = [g["size"] for g in result.get("stability_gaps") or [] if is_number(g.get("size"))]
    return sum(sizes) / len(sizes) if sizes else None


def comparison_columns(results: Sequence[Mapping[str, Any]], scenario: str | None) -> list[tuple[str, str]]:
    """(key, header) of the columns a comparison shows: FWT where meaningful, min-ACC / WC-ACC / gap where
    continual evaluation ran."""
    cols = [("final_accuracy", "final acc"), ("average_incremental_accuracy", "avg inc acc"), ("bwt", "BWT"),
            ("forgetting", "forgetting")]
    matrices = [r["accuracy_matrix"] for r in results if r.get("accuracy_matrix")]
    if fwt_meaningful(scenario, matrices) and any(is_number(r.get("fwt")) for r in results):
        cols.append(("fwt", "FWT"))
    if any(is_number(r.get("a_auc")) or is_number(r.get("online_accuracy")) for r in results):
        cols += [("a_auc", "A_auc"), ("a_last", "A_last"), ("online_accuracy", "online acc")]
    if any(is_number(r.get("min_acc")) for r in results):
        cols += [("min_acc", "min-ACC"), ("wc_acc", "WC-ACC"), ("gap", "gap")]
    return cols + [("train_seconds", "time s"), ("peak_rss_mb", "peak MiB")]


def summary_rows(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per strategy (in order of appearance): {"strategy", "seeds", key: (mean, std, n)} over its finished
    runs (results holding "error" are left out)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault(str(r.get("strategy")), []).append(r)
    rows = []
    for name, rs in groups.items():
        row: dict[str, Any] = {"strategy": name, "seeds": len(rs)}
        for k in keys:
            row[k] = mean_std([mean_gap(r) if k == "gap" else r.get(k) for r in rs])
        rows.append(row)
    return rows


def comparison_table(results: Sequence[Mapping[str, Any]], scenario: str | None = None) -> str:
    """The plain-text table of `lifelong compare`: mean ± std over seeds per strategy, in percent."""
    cols = comparison_columns(results, scenario)
    header = ["strategy", "seeds"] + [h for _, h in cols]
    lines = [[row["strategy"], str(row["seeds"]), *(mean_pm(*row[k][:2], k, row[k][2]) for k, _ in cols)]
             for row in summary_rows(results, [k for k, _ in cols])]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in lines]
    notes = []
    if stream_kind(scenario) == "class-incremental":
        notes.append("FWT left out: in a class-incremental stream it is minus the untrained accuracy for every "
                     "method.")
    if any(k == "gap" for k, _ in cols):
        notes.append("gap: mean stability-gap size (accuracy on old experiences lost right after a switch).")
    return "\n".join(out + notes)
