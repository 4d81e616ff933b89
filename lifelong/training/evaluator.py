"""The evaluator: accuracy of every experience of the stream, and continual evaluation every K steps.

Every evaluation scores the strategy's `predict` (the model's logits unless a strategy replaces the prediction,
e.g. a nearest-mean classifier), in eval mode with gradients off (`torch.inference_mode` for the model's own
forward), restricted to the task's classes on task-aware streams. Schedule-free optimizers are switched to their
averaged weights for it.

In a data-parallel run (lifelong.training.distributed) each evaluation is done once: every rank scores its
contiguous share of the test rows and the hit counts are summed over the ranks, so every rank gets the same
accuracies. The prequential prediction of an online stream's incoming batch runs on every rank (identical).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lifelong.data.stream import Experience, Stream
from lifelong.evaluation.probe import ContinualProbe, correct, masked_correct, no_autograd, smallest_test_set
from lifelong.schedules.schedulefree_support import eval_mode
from lifelong.training import distributed
from lifelong.training.config import RunConfig
from lifelong.training.learner import Learner

DEFAULT_PROBE = 500  # test samples per experience for continual evaluation unless eval_subsample says otherwise
KEEP_BYTES = 256 * 2**20  # prepared test inputs kept from one evaluation to the next, at most this many bytes


class Evaluator:
    """Accuracy rows for the accuracy matrix and points of the accuracy-vs-step curve."""

    def __init__(self, cfg: RunConfig, stream: Stream, learner: Learner) -> None:
        self.stream, self.learner = stream, learner
        strategy = learner.strategy
        custom = strategy.overrides("predict")
        self.model_forward = not custom
        n = cfg.eval_subsample or min(DEFAULT_PROBE, smallest_test_set(stream))
        self.probe = ContinualProbe(stream, learner.prepare, learner.task_mask, n, cfg.seed,
                                    learner.model, cfg.eval_background and not custom,
                                    strategy.predict if custom else None, learner.kernel) if cfg.eval_every else None
        self.kept: dict[tuple[int, int], tuple[Experience, list[tuple[torch.Tensor, torch.Tensor]], list[int]]] = {}
        self.kept_bytes = 0

    def correct(self, exp: Experience, chunk: int = 4096, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Correct test predictions on one experience (within its task's classes on task-aware streams; within
        the labels seen so far on online streams), as a tensor: chunks of `chunk` rows, one conversion of the
        stored inputs per chunk, no synchronisation. `idx`: these test samples instead of the experience's.
        Data-parallel: this rank's share of the rows, the hits summed over the ranks (the same on every rank)."""
        learner, whole, idx = self.learner, idx is None, exp.test_idx if idx is None else idx
        world = learner.world
        if world.active:
            lo, hi = distributed.shard(len(idx), world)
            idx = idx[lo:hi]
        allowed = None if learner.task_mask is None else learner.task_mask[exp.task_id]
        seen = learner.allowed if self.stream.online else None
        if seen is not None:
            allowed = seen if allowed is None else allowed & seen
        hits = torch.zeros((), dtype=torch.long, device=learner.device)
        for x, y in self.test_chunks(exp, idx, chunk, keep=whole):
            with learner.kernel(len(x)):
                scores = learner.strategy.predict(learner.model, x)
            hits = hits + (correct(scores, y, allowed) if seen is None else masked_correct(scores, y, allowed))
        return distributed.all_reduce_sum(hits, world) if world.active else hits

    def test_chunks(self, exp: Experience, idx: torch.Tensor, chunk: int,
                    keep: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Prepared test inputs and labels of `idx`, `chunk` rows at a time. `keep`: `idx` is the experience's
        whole test set, kept prepared for the next evaluation while all kept sets fit in KEEP_BYTES, so the
        conversion of the stored inputs runs once per run instead of once per evaluation (it is deterministic:
        evaluation never augments). Kept tensors are ordinary ones (made outside inference mode), so a model
        that changed its input in place is caught by the version counter and the set is prepared again."""
        key = (id(exp), chunk)
        if key in self.kept:
            _, store, versions = self.kept[key]
            if [x._version for x, _ in store] == versions:
                yield from store
                return
            del self.kept[key]
            self.kept_bytes -= nbytes(store)
        store = [] if keep else None
        versions = []
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            with torch.inference_mode(False):
                pair = (self.learner.prepare(exp.raw(part, "test")), exp.labels(part, "test"))
            if store is not None and s == 0:
                row_bytes = (pair[0].nbytes + pair[1].nbytes) / len(part)
                if self.kept_bytes + row_bytes * len(idx) > KEEP_BYTES:
                    store = None
            if store is not None:
                store.append(pair)
                versions.append(pair[0]._version)
            yield pair
        if store is not None:
            self.kept[key] = (exp, store, versions)
            self.kept_bytes += nbytes(store)

    def prequential(self, exp: Experience, idx: torch.Tensor) -> torch.Tensor:
        """Online streams: correct predictions on the incoming training samples `idx` with the current model,
        before it trains on them (eval mode, gradients off; labels not seen yet are never predicted)."""
        learner = self.learner
        model = learner.model
        was = model.training
        model.eval()
        with eval_mode(learner.optimizer), no_autograd(model if self.model_forward else None):
            x = learner.prepare(exp.raw(idx))
            with learner.kernel(len(x)):
                scores = learner.strategy.predict(model, x)
            hits = masked_correct(scores, exp.labels(idx), learner.allowed)  # type: ignore[arg-type]
        model.train(was)
        return hits

    def anytime(self) -> float | None:
        """Online streams: accuracy on the test samples (of every evaluated set) whose label was seen so far, as
        the i-Blurry / Si-Blurry code evaluates; None before any label was seen."""
        learner = self.learner
        model = learner.model
        seen = learner.allowed
        was = model.training
        model.eval()
        hits, total = [], 0
        with eval_mode(learner.optimizer), no_autograd(model if self.model_forward else None):
            for e in self.stream.evaluated:
                idx = e.test_idx[seen[e.labels(e.test_idx, "test")]]  # type: ignore[index]
                if len(idx):
                    hits.append(self.correct(e, idx=idx))
                    total += len(idx)
        model.train(was)
        return int(torch.stack(hits).sum()) / total if total else None

    def accuracy(self, exp: Experience, chunk: int = 4096) -> float:
        """Test accuracy on one experience (within its task's classes on task-aware streams)."""
        if len(exp.test_idx) == 0:
            return float("nan")
        with no_autograd(self.learner.model if self.model_forward else None):
            return int(self.correct(exp, chunk)) / len(exp.test_idx)

    def evaluate(self) -> list[float]:
        """Accuracy on the test data of every experience of the (original) stream (one synchronisation)."""
        model = self.learner.model
        was = model.training
        model.eval()
        with eval_mode(self.learner.optimizer), no_autograd(model if self.model_forward else None):
            hits = torch.stack([self.correct(e) for e in self.stream.evaluated]).tolist()
        model.train(was)
        return [h / len(e.test_idx) if len(e.test_idx) else float("nan")
                for h, e in zip(hits, self.stream.evaluated, strict=True)]

    def submit(self, step: int, seen: int) -> None:
        """Queue a continual evaluation of experiences 0..seen-1 at `step` (the probe snapshots the weights)."""
        allowed = self.learner.allowed if self.stream.online else None
        with eval_mode(self.learner.optimizer):
            self.probe.submit(step, seen, self.learner.model, allowed)

    def collect(self, wait: bool = False) -> list[tuple[int, list[float | None]]]:
        """Finished continual evaluations in step order (all of them when `wait`)."""
        return [] if self.probe is None else self.probe.collect(wait)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()


def nbytes(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes held by prepared (inputs, labels) chunks."""
    return sum(x.nbytes + y.nbytes for x, y in pairs)


def mean_seen(row: list[float | None] | list[float], seen: int | None = None) -> float:
    """Mean accuracy over the experiences seen so far (the first `seen`, or those that are not None)."""
    values = [a for a in (row if seen is None else row[:seen]) if a is not None]
    return sum(values) / len(values)

