"""Continual-evaluation metrics as pure functions of accuracy-vs-step curves (De Lange et al., ICLR 2023).

A *curve* is the JSON-shaped dict the engine records::

    {"steps": [s_0, s_1, ...], "accuracy": [[A_0(E_0), A_0(E_1), ...], [A_1(E_0), ...], ...]}

`steps` are global optimiser steps in increasing order (step s = after s optimiser updates); `accuracy[i][j]` is
the accuracy on experience j's (subsampled) test data at the i-th evaluation, `None` (or NaN) where experience j
was not evaluated, e.g. not seen yet. `boundaries[j]` is |T_j|, the global step at which training on experience j
ended. An evaluation at step n belongs to experience k (the *current* experience) when |T_{k-1}| < n <= |T_k|
(|T_{-1}| = 0); evaluations after the last boundary belong to the experience being trained then (a run that
is still going). Experiences are the tasks of the paper; the metrics below use the paper's names.

The definitions follow the authors' code (github.com/mattdl/ContinualEvaluation, src/eval/continual_eval_metrics.py),
read at the last evaluation t, with k the experience current at t. Task j is *seen* from the first step of its
training on (evaluations with n > |T_{j-1}|); the authors evaluate only seen tasks, so earlier values are ignored.

- min-ACC = mean over j < k of  min_{n : |T_j| < n <= t} A(E_j, f_n)  (tasks without an evaluation after their
  end are left out of the mean; None when no task is left).
- WC-ACC = mean of A(E_k, f_t) and the per-task minima of min-ACC, i.e. (1/K) A(E_k, f_t) + (1 - 1/K) min-ACC with
  K = k + 1 when every old task has its minimum (K = 1: the current accuracy).
- WF^(w)(E_j) = the largest drop A(E_j, f_m) - A(E_j, f_m') with m < m' inside any window of w consecutive
  evaluations of E_j since it was seen (0 if it never drops). Windows slide over the task's whole history, its own
  training included, so the window that holds the last evaluation before the switch and the first ones after it
  counts the collapse right after the switch. The reported WF^(w) is the mean over every seen task j <= k, the
  current one included (the authors average every task they track).
- WP^(w)(E_j) = the same with the largest gain A(E_j, f_m') - A(E_j, f_m); also over the task's whole history (so a
  recovery after a switch counts as well) and averaged over every seen task j <= k.
- LCA_beta (learning-curve area, Chaudhry et al. 2019, as the authors' code computes it) = mean over tasks of the
  mean accuracy on E_j over the first beta evaluations made while E_j is current; a task with fewer than beta such
  evaluations is left out (None when no task has beta of them).

Windows count *evaluations*, not optimiser steps: with evaluation every r steps (`--eval-every r`), WF^(10) looks
at 10 consecutive evaluations, i.e. spans 10 r steps of training (100 steps with `--eval-every 10`; the pairs it
compares are at most 9 r steps apart), and LCA_10 covers the first 10 r steps of each task. The authors evaluate
after every iteration by default (r = 1), where evaluations and steps coincide.

Deviations from the authors' code: none in the definitions above; these functions take whatever evaluations the
curve holds. Where evaluations are made differs: the authors also evaluate once before the first update and after
the last step of every epoch (so at every task boundary), the engine every r global steps only, so LCA's zero-shot
point of task 0 and the evaluation at |T_j| are in the curve only when a step falls there.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lifelong.errors import LifelongError

Curve = Mapping[str, Any]  # {"steps": [...], "accuracy": [[...], ...]}
DEFAULT_WINDOWS = (10, 100)
DEFAULT_LCA_BETA = 10


# --- shaping ---------------------------------------------------------------------------------------------
def curve_from_rows(rows: Iterable[tuple[int, int, float]], num_experiences: int | None = None) -> dict[str, Any]:
    """The JSON-shaped curve from (step, experience, accuracy) rows, e.g. `RunStore.curve()`.

    Experiences without a row at an evaluation get None; `num_experiences` pads every row to that width."""
    by_step: dict[int, dict[int, float]] = {}
    width = num_experiences or 0
    for step, j, value in rows:
        by_step.setdefault(int(step), {})[int(j)] = float(value)
        width = max(width, int(j) + 1)
    steps = sorted(by_step)
    return {"steps": steps, "accuracy": [[by_step[s].get(j) for j in range(width)] for s in steps]}


def _value(row: Sequence[float | None], j: int) -> float | None:
    v = row[j] if j < len(row) else None
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _checked(curve: Curve) -> tuple[list[int], list[Sequence[float | None]]]:
    try:
        steps, acc = list(curve["steps"]), list(curve["accuracy"])
    except (KeyError, TypeError):
        raise LifelongError("a continual-evaluation curve needs the keys 'steps' and 'accuracy'") from None
    if len(steps) != len(acc):
        raise LifelongError(f"curve has {len(steps)} steps but {len(acc)} accuracy rows")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise LifelongError("curve steps must be strictly increasing")
    return steps, acc


def current_experience(step: int, boundaries: Sequence[int]) -> int:
    """The experience being trained at global step `step`: k with |T_{k-1}| < step <= |T_k|."""
    return sum(1 for b in boundaries if b < step)


def series(curve: Curve, j: int, start: int | None = None, stop: int | None = None) -> list[tuple[int, float]]:
    """(step, accuracy on E_j) for the evaluations with start < step <= stop that measured E_j."""
    steps, acc = _checked(curve)
    out = []
    for s, row in zip(steps, acc, strict=True):
        if (start is not None and s <= start) or (stop is not None and s > stop):
            continue
        v = _value(row, j)
        if v is not None:
            out.append((s, v))
    return out


def mean_seen_accuracy(curve: Curve) -> list[float | None]:
    """Mean accuracy over the experiences evaluated at each evaluation (None where none was)."""
    _, acc = _checked(curve)
    out: list[float | None] = []
    for row in acc:
        vals = [v for v in (_value(row, j) for j in range(len(row))) if v is not None]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --- window statistics --------------------------------------------------------------------------------------
def max_window_change(values: Sequence[float], w: int, direction: str = "drop") -> float:
    """Largest values[m] - values[m'] (direction="drop") or values[m'] - values[m] ("gain") over m < m' < m + w.

    That is, the largest change inside any window of w consecutive values; 0 when nothing drops (gains)."""
    if w < 1:
        raise LifelongError(f"window size must be >= 1, got {w}")
    sign = 1.0 if direction == "drop" else -1.0
    best = 0.0
    window: deque[int] = deque()  # indices of the last w-1 values, decreasing in sign*value (monotone deque)
    for i, v in enumerate(values):
        while window and window[0] <= i - w:
            window.popleft()
        if window:
            best = max(best, sign * (values[window[0]] - v))
        while window and sign * values[window[-1]] <= sign * v:
            window.pop()
        window.append(i)
    return best


# --- the metrics --------------------------------------------------------------------------------------------
def _last(steps: list[int], boundaries: Sequence[int]) -> tuple[int, int] | None:
    if not steps:
        return None
    t = steps[-1]
    return t, current_experience(t, boundaries)


def min_acc_per_task(curve: Curve, boundaries: Sequence[int]) -> dict[int, float]:
    """j -> min_{|T_j| < n <= t} A(E_j, f_n) for every finished task j < k that has an evaluation after its end."""
    steps, _ = _checked(curve)
    last = _last(steps, boundaries)
    if last is None:
        return {}
    _, k = last
    out = {}
    for j in range(min(k, len(boundaries))):
        vals = [v for _, v in series(curve, j, start=boundaries[j])]
        if vals:
            out[j] = min(vals)
    return out


def min_acc(curve: Curve, boundaries: Sequence[int]) -> float | None:
    """min-ACC at the last evaluation: mean over previous tasks of their minimum accuracy after their end."""
    return _mean(list(min_acc_per_task(curve, boundaries).values()))


def wc_acc(curve: Curve, boundaries: Sequence[int]) -> float | None:
    """WC-ACC at the last evaluation t: the mean of A(E_k, f_t) and the min-ACC minimum of every old task
    (= (1/K) A(E_k, f_t) + (1 - 1/K) min-ACC with K = k + 1 when every old task has one)."""
    steps, acc = _checked(curve)
    last = _last(steps, boundaries)
    if last is None:
        return None
    _, k = last
    current = _value(acc[-1], k)
    if current is None:
        return None
    return _mean([current, *min_acc_per_task(curve, boundaries).values()])


def _seen_series(curve: Curve, boundaries: Sequence[int], j: int) -> list[float]:
    """Accuracy on E_j at every evaluation since E_j was seen (n > |T_{j-1}|), its own training included."""
    start = boundaries[j - 1] if j >= 1 else None
    return [v for _, v in series(curve, j, start=start)]


def _current_task_series(curve: Curve, boundaries: Sequence[int], k: int) -> list[float]:
    start = boundaries[k - 1] if k >= 1 else None
    stop = boundaries[k] if k < len(boundaries) else None
    return [v for _, v in series(curve, k, start=start, stop=stop)]


def _trained_tasks(steps: list[int], boundaries: Sequence[int]) -> range:
    last = _last(steps, boundaries)
    return range(0 if last is None else last[1] + 1)


def _windowed_per_task(curve: Curve, boundaries: Sequence[int], w: int, direction: str) -> dict[int, float]:
    steps, _ = _checked(curve)
    return {j: max_window_change(vals, w, direction) for j in _trained_tasks(steps, boundaries)
            if (vals := _seen_series(curve, boundaries, j))}


def windowed_forgetting_per_task(curve: Curve, boundaries: Sequence[int], w: int) -> dict[int, float]:
    """j -> WF^(w)(E_j): the largest drop on E_j within w consecutive evaluations since E_j was seen, for every
    seen task j <= k (windows slide across the switch out of E_j)."""
    return _windowed_per_task(curve, boundaries, w, "drop")


def windowed_forgetting(curve: Curve, boundaries: Sequence[int], w: int) -> float | None:
    """WF^(w): mean of `windowed_forgetting_per_task` over every seen task (the current one included)."""
    return _mean(list(windowed_forgetting_per_task(curve, boundaries, w).values()))


def windowed_plasticity_per_task(curve: Curve, boundaries: Sequence[int], w: int) -> dict[int, float]:
    """j -> WP^(w)(E_j): the largest gain on E_j within w consecutive evaluations since E_j was seen."""
    return _windowed_per_task(curve, boundaries, w, "gain")


def windowed_plasticity(curve: Curve, boundaries: Sequence[int], w: int) -> float | None:
    """WP^(w): mean of `windowed_plasticity_per_task` over every seen task (the current one included)."""
    return _mean(list(windowed_plasticity_per_task(curve, boundaries, w).values()))


def learning_curve_area(curve: Curve, boundaries: Sequence[int], beta: int = DEFAULT_LCA_BETA) -> float | None:
    """LCA_beta: mean over tasks of the mean accuracy on E_k over its first beta evaluations while it is current;
    tasks with fewer than beta such evaluations are left out (None when none has beta)."""
    if beta < 1:
        raise LifelongError(f"LCA beta must be >= 1, got {beta}")
    steps, _ = _checked(curve)
    per_task = [sum(vals[:beta]) / beta for k in _trained_tasks(steps, boundaries)
                if len(vals := _current_task_series(curve, boundaries, k)) >= beta]
    return _mean(per_task)


def _old_mean(row: Sequence[float | None], k: int) -> float | None:
    vals = [_value(row, j) for j in range(k)]
    return None if any(v is None for v in vals) else sum(vals) / k  # type: ignore[arg-type]


def stability_gaps(curve: Curve, boundaries: Sequence[int]) -> list[dict[str, Any]]:
    """The stability gap at every task switch, measured on the mean accuracy over the old tasks j < k.

    For the switch into experience k (at step |T_{k-1}|), with a(n) = mean_{j<k} A(E_j, f_n):
      before    a at the last evaluation at or before the switch;
      min       the lowest a while E_k is current, reached at step min_step;
      end       a at the last evaluation while E_k is current;
      size      before - min (>= 0): how deep accuracy on the old tasks dips below its pre-switch level;
      duration  steps from the switch until a first climbs back, after the dip, to min(before, end) -- the level
                it keeps at the end of the task, or the pre-switch level if lower (0 when there is no dip);
      recovery  (end - min) / (before - min): the fraction of the dip recovered by the end of the task
                (1 = fully back, 0 = none; None when there is no dip).
    Switches without an evaluation before and after them give None for the measured fields.
    """
    steps, acc = _checked(curve)
    gaps = []
    in_progress = bool(steps) and bool(boundaries) and steps[-1] > boundaries[-1]
    for k in range(1, len(boundaries) + int(in_progress)):
        switch = boundaries[k - 1]
        stop = boundaries[k] if k < len(boundaries) else math.inf
        gap: dict[str, Any] = {"experience": k, "switch_step": switch, "before": None, "min": None,
                               "min_step": None, "end": None, "size": None, "duration": None, "recovery": None}
        before = [a for s, row in zip(steps, acc, strict=True)
                  if s <= switch and (a := _old_mean(row, k)) is not None]
        during = [(s, a) for s, row in zip(steps, acc, strict=True)
                  if switch < s <= stop and (a := _old_mean(row, k)) is not None]
        if not during:
            gaps.append(gap)
            continue
        low_step, low = min(during, key=lambda p: (p[1], p[0]))
        end = during[-1][1]
        gap.update(min=low, min_step=low_step, end=end)
        if before:
            b = before[-1]
            size = max(0.0, b - low)
            gap.update(before=b, size=size)
            if size == 0:
                gap.update(duration=0)
            else:
                target = min(b, end)
                back = next(s for s, a in during if s >= low_step and a >= target)
                gap.update(duration=back - switch, recovery=(end - low) / (b - low))
        gaps.append(gap)
    return gaps


def task_drops(curve: Curve, boundaries: Sequence[int]) -> list[dict[str, Any]]:
    """Per old task j and per later experience k > j: how far A(E_j) falls during experience k.

      end_of_training  A(E_j) at the last evaluation at or before the end of experience j;
      before           A(E_j) at the last evaluation at or before the switch into k;
      min, min_step    the lowest A(E_j) while k is current;
      drop             before - min;  end  A(E_j) at the last evaluation of experience k.
    """
    steps, acc = _checked(curve)
    out = []
    for j in range(len(boundaries)):
        trained = [_value(row, j) for s, row in zip(steps, acc, strict=True) if s <= boundaries[j]]
        trained = [a for a in trained if a is not None]
        for k in range(j + 1, len(boundaries)):
            switch, stop = boundaries[k - 1], boundaries[k]
            before = [a for s, row in zip(steps, acc, strict=True) if s <= switch and (a := _value(row, j)) is not None]
            during = [(s, a) for s, row in zip(steps, acc, strict=True)
                      if switch < s <= stop and (a := _value(row, j)) is not None]
            if not (trained and before and during):
                continue
            low_step, low = min(during, key=lambda p: (p[1], p[0]))
            out.append({"task": j, "experience": k, "end_of_training": trained[-1], "before": before[-1],
                        "min": low, "min_step": low_step, "drop": before[-1] - low, "end": during[-1][1]})
    return out


def curve_metrics(curve: Curve, boundaries: Sequence[int], windows: Sequence[int] = DEFAULT_WINDOWS,
                  lca_beta: int = DEFAULT_LCA_BETA, learned_at: Sequence[int | None] | None = None) -> dict[str, Any]:
    """Every continual-evaluation metric of one run, by its JSON name.

    Returns {"min_acc", "wc_acc", "wf10", "wf100", "wp10", "wp100", "lca", "stability_gaps": [...]}
    (wf/wp keys follow `windows`); a metric that the curve cannot support is None. `learned_at` (streams with
    eval sets: for each curve column, the first experience that trains its classes): these metrics take column
    j as experience j's test set, so unless column j is first learned in experience j, for every j (power-law
    streams), they are undefined and None: on SCoLe's class sets and the hierarchy levels of HLE streams a
    column is not a task that ends at a boundary (its classes recur, or span experiences)."""
    steps, _ = _checked(curve)
    if learned_at is not None and list(learned_at) != list(range(len(boundaries))):
        return {**curve_metrics({"steps": [], "accuracy": []}, [], windows, lca_beta), "evaluations": len(steps)}
    out: dict[str, Any] = {"evaluations": len(steps), "min_acc": min_acc(curve, boundaries),
                           "wc_acc": wc_acc(curve, boundaries)}
    for w in windows:
        out[f"wf{w}"] = windowed_forgetting(curve, boundaries, w)
    for w in windows:
        out[f"wp{w}"] = windowed_plasticity(curve, boundaries, w)
    out["lca"] = learning_curve_area(curve, boundaries, lca_beta)
    out["stability_gaps"] = stability_gaps(curve, boundaries)
    out["task_drops"] = task_drops(curve, boundaries)
    return out
