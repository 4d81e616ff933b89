"""Continual-learning metrics as pure functions of the accuracy matrix.

R[i][j] is the accuracy on experience j's test data after training on experience i (T x T, or fewer rows
for references such as joint training); `initial[j]` is the accuracy of the untrained model (for FWT).
Definitions follow Lopez-Paz & Ranzato (2017) for BWT/FWT and Chaudhry et al. (2018) for forgetting. An
experience without test samples (a Si-Blurry task may hold no class of its own) has NaN entries, which every
mean skips.

Streams with eval sets (`Stream.eval_sets`: per-level sets, one set per class of a long recurring stream) give a
[training experiences] x [eval sets] matrix: every set counts as seen (final accuracy is the mean over all sets,
as SCoLe evaluates on the whole test set), and set j's BWT and forgetting are taken from the row where it was
first learned (`learned_at[j]`, the first experience holding one of its classes) on: R[T-1][j] - R[l_j][j] and
max over rows l_j..T-2 of R[l][j] - R[T-1][j], averaged over the sets learned before the last row; NaN entries
(empty test sets) are skipped. For an ordinary stream (learned_at[j] = j) these are the square definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _mean(values: Sequence[float]) -> float:
    """Mean of the defined values (NaN, or None once stored, marks an experience with no test samples); NaN
    when none is defined."""
    kept = [v for v in values if v is not None and v == v]
    return sum(kept) / len(kept) if kept else float("nan")


def _mean_or_none(values: Sequence[float]) -> float | None:
    m = _mean(values)
    return m if m == m else None


def final_accuracy(R: Matrix) -> float:
    """Mean accuracy over all experiences after the last training experience."""
    return _mean(R[-1])


def average_incremental_accuracy(R: Matrix) -> float:
    """Mean over training steps i of the mean accuracy on experiences 0..i (Rebuffi et al. 2017).

    Only meaningful when row i follows experience i (a square matrix)."""
    return _mean([_mean(R[i][: i + 1]) for i in range(len(R))])


def backward_transfer(R: Matrix) -> float | None:
    """BWT = mean over j < T-1 of R[T-1][j] - R[j][j]; negative means forgetting. None for one row."""
    T = len(R)
    if T < 2:
        return None
    return _mean_or_none([R[T - 1][j] - R[j][j] for j in range(T - 1)])


def forward_transfer(R: Matrix, initial: Sequence[float]) -> float | None:
    """FWT = mean over j > 0 of R[j-1][j] - initial[j]: what training so far did for an unseen experience."""
    T = len(R)
    if T < 2:
        return None
    return _mean_or_none([R[j - 1][j] - initial[j] for j in range(1, T)])


def average_forgetting(R: Matrix) -> float | None:
    """Mean over j < T-1 of max_{l in [j, T-2]} R[l][j] - R[T-1][j] (best past accuracy minus final)."""
    T = len(R)
    if T < 2:
        return None
    return _mean_or_none([max(R[l][j] for l in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)])


def eval_set_metrics(R: Matrix, learned_at: Sequence[int | None]) -> dict[str, float | None]:
    """Metrics of a [training experiences] x [eval sets] matrix (see the module docstring)."""
    T = len(R)
    if len(learned_at) != len(R[-1]):
        raise ValueError(f"learned_at has {len(learned_at)} entries for {len(R[-1])} eval sets")

    def defined(values: list[float]) -> list[float]:
        return [v for v in values if v == v]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    final = mean(defined(list(R[-1])))
    incremental = mean(defined([m for row in R if (m := mean(defined(list(row)))) is not None]))
    bwt, forgetting = [], []
    for j, first in enumerate(learned_at):
        if first is None or first >= T - 1 or R[T - 1][j] != R[T - 1][j]:
            continue
        if R[first][j] == R[first][j]:
            bwt.append(R[T - 1][j] - R[first][j])
        past = defined([R[l][j] for l in range(first, T - 1)])
        if past:
            forgetting.append(max(past) - R[T - 1][j])
    return {"final_accuracy": final, "average_incremental_accuracy": incremental, "bwt": mean(bwt), "fwt": None,
            "forgetting": mean(forgetting)}


def summarize(R: Matrix, initial: Sequence[float] | None = None,
              learned_at: Sequence[int | None] | None = None) -> dict[str, float | None]:
    """All matrix metrics by their JSON names; `learned_at` (one entry per eval set): the matrix of a stream with
    eval sets (see `eval_set_metrics`)."""
    if learned_at is not None:
        return eval_set_metrics(R, learned_at)
    square = len(R) == len(R[0])
    return {
        "final_accuracy": final_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R) if square else final_accuracy(R),
        "bwt": backward_transfer(R) if square else None,
        "fwt": forward_transfer(R, initial) if square and initial is not None else None,
        "forgetting": average_forgetting(R) if square else None,
    }
