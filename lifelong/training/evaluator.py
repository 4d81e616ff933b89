"""The evaluator: accuracy of every experience of the stream, and continual evaluation every K steps.

Every evaluation scores the strategy's `predict` (the model's logits unless a strategy replaces the prediction,
e.g. a nearest-mean classifier), in eval mode with gradients off, restricted to the task's classes on task-aware
streams. Schedule-free optimizers are switched to their averaged weights for it.
"""

from __future__ import annotations

import torch

from lifelong.data.stream import Experience, Stream
from lifelong.evaluation.probe import ContinualProbe, count_correct
from lifelong.schedules.schedulefree_support import eval_mode
from lifelong.training.config import RunConfig
from lifelong.training.learner import Learner


class Evaluator:
    """Accuracy rows for the accuracy matrix and points of the accuracy-vs-step curve."""

    def __init__(self, cfg: RunConfig, stream: Stream, learner: Learner) -> None:
        self.stream, self.learner = stream, learner
        strategy = learner.strategy
        custom = strategy.overrides("predict")
        self.probe = ContinualProbe(stream, learner.prepare, learner.task_mask, cfg.eval_subsample, cfg.seed,
                                    learner.model, cfg.eval_background and not custom,
                                    strategy.predict if custom else None) if cfg.eval_every else None

    @torch.no_grad()
    def accuracy(self, exp: Experience, chunk: int = 4096) -> float:
        """Test accuracy on one experience (within its task's classes on task-aware streams)."""
        idx = exp.test_idx
        if len(idx) == 0:
            return float("nan")
        learner = self.learner
        allowed = None if learner.task_mask is None else learner.task_mask[exp.task_id]
        correct = 0
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            scores = learner.strategy.predict(learner.model, learner.prepare(exp.raw(part, "test")))
            correct += count_correct(scores, exp.labels(part, "test"), allowed)
        return correct / len(idx)

    def evaluate(self) -> list[float]:
        """Accuracy on the test data of every experience of the (original) stream."""
        model = self.learner.model
        was = model.training
        model.eval()
        with eval_mode(self.learner.optimizer):
            accs = [self.accuracy(e) for e in self.stream]
        model.train(was)
        return accs

    def submit(self, step: int, seen: int) -> None:
        """Queue a continual evaluation of experiences 0..seen-1 at `step` (the probe snapshots the weights)."""
        with eval_mode(self.learner.optimizer):
            self.probe.submit(step, seen, self.learner.model)

    def collect(self, wait: bool = False) -> list[tuple[int, list[float | None]]]:
        """Finished continual evaluations in step order (all of them when `wait`)."""
        return [] if self.probe is None else self.probe.collect(wait)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()


def mean_seen(row: list[float | None] | list[float], seen: int | None = None) -> float:
    """Mean accuracy over the experiences seen so far (the first `seen`, or those that are not None)."""
    values = [a for a in (row if seen is None else row[:seen]) if a is not None]
    return sum(values) / len(values)

