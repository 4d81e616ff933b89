"""Metrics of online (task-free) streams as pure functions.

Anytime accuracy (Koh et al. 2022, "Online Continual Learning on Class Incremental Blurry Task Configuration
with Anytime Inference", Eq. 4): the model is evaluated every `every` incoming samples on the test samples of
the classes seen so far; A_auc is the area under that accuracy-vs-samples curve divided by its length, which
with uniform spacing is the mean of the evaluations. A_last is the accuracy on the seen classes' test samples
after the whole stream. Online (prequential) accuracy: each incoming batch is predicted by the current model
before the model trains on it; hits over all incoming samples.
"""

from __future__ import annotations

from collections.abc import Sequence


def evaluation_points(before: int, after: int, every: int) -> int:
    """How many anytime evaluations fall due when the samples seen go from `before` to `after` (one per
    multiple of `every` crossed; 0 when `every` is 0, i.e. off)."""
    if every <= 0:
        return 0
    if before < 0 or after < before:
        raise ValueError(f"samples seen must not decrease: {before} -> {after}")
    return after // every - before // every


def a_auc(accuracies: Sequence[float | None]) -> float | None:
    """Anytime accuracy: the mean of the accuracies of evaluations at uniform spacing (None ones, taken before
    any label was seen, are left out); None when there is none."""
    values = [a for a in accuracies if a is not None]
    return sum(values) / len(values) if values else None


def online_accuracy(hits: int, samples: int) -> float | None:
    """Prequential accuracy: correct predictions on incoming samples before training on them, over samples."""
    if hits < 0 or hits > samples:
        raise ValueError(f"hits={hits} must lie in [0, samples={samples}]")
    return hits / samples if samples else None


def online_summary(hits: int, samples: int, anytime_samples: Sequence[int],
                   anytime_accuracy: Sequence[float | None], last: float | None) -> dict[str, object]:
    """The online metrics by their JSON names: `a_auc`, `a_last`, `online_accuracy` and the anytime curve."""
    if len(anytime_samples) != len(anytime_accuracy):
        raise ValueError("the anytime curve needs one accuracy per evaluation point")
    return {"a_auc": a_auc(anytime_accuracy), "a_last": last, "online_accuracy": online_accuracy(hits, samples),
            "anytime": {"samples": list(anytime_samples), "accuracy": list(anytime_accuracy)}}
