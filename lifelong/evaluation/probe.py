"""Continual evaluation: accuracy of every seen experience every K training steps, on fixed seeded subsets.

Evaluating 500 samples of each seen experience every 10 steps costs about as much arithmetic as the training
itself. The probe therefore copies the weights into a twin model at the requested step (microseconds) and,
by default, runs the forward pass on a background thread, i.e. on a core the single-threaded training loop
leaves idle. The numbers are identical either way: same weights, same inputs, same operations. At most one
evaluation is in flight; results come back in step order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from lifelong.data.stream import Stream
from lifelong.errors import LifelongError


def correct(logits: Tensor, labels: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Number of correct arg-max predictions, as a tensor on the logits' device (no synchronisation);
    `allowed` (a class mask) restricts them to a task's classes."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return (logits.argmax(1) == labels).sum()


def masked_correct(logits: Tensor, labels: Tensor, allowed: Tensor) -> Tensor:
    """Correct arg-max predictions among the classes in `allowed` (a class mask); a sample whose label is not
    allowed is never correct (also when no class is allowed, where arg-max would pick class 0)."""
    hit = logits.masked_fill(~allowed, float("-inf")).argmax(1) == labels
    return (hit & allowed[labels]).sum()


def no_autograd(model: nn.Module | None) -> AbstractContextManager:
    """The context of an evaluation: `torch.inference_mode` for a model's own forward (`model`; no autograd
    bookkeeping at all), `torch.no_grad` for a strategy's `predict` (None), which may cache tensors it later
    trains with (inference tensors cannot be used by autograd), and for models with lazy parameters still to
    be materialised (they would become inference tensors)."""
    if model is None or any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        return torch.no_grad()
    return torch.inference_mode()


def smallest_test_set(stream: Stream) -> int:
    """Test samples of the smallest evaluated experience that has any (a Si-Blurry task may hold no class: its
    set is empty and its accuracy None)."""
    return min((len(e.test_idx) for e in stream.evaluated if len(e.test_idx)), default=0)


@dataclass
class ProbeSet:
    x: Tensor
    y: Tensor
    task: int


class ContinualProbe:
    """Fixed test subsets per experience and an evaluator of a model snapshot on the first `seen` of them."""

    def __init__(self, stream: Stream, prepare, task_mask: Tensor | None, n: int, seed: int, model: nn.Module,
                 background: bool = True,
                 predict: Callable[[nn.Module, Tensor], Tensor] | None = None,
                 kernel: Callable[[int], AbstractContextManager] | None = None) -> None:
        smallest = smallest_test_set(stream)
        if n > smallest:
            raise LifelongError(f"eval_subsample={n} is larger than the data: the smallest experience has "
                                f"{smallest} test samples")
        self.model_forward = predict is None
        self.predict = predict or (lambda model, x: model(x))
        self.kernel = kernel or (lambda rows: nullcontext())  # the forward's context (lifelong.training.kernels)
        g = torch.Generator().manual_seed(seed + 12345)
        self.sets = []
        for e in stream.evaluated:
            pick = e.test_idx[torch.randperm(len(e.test_idx), generator=g)[:n].to(e.test_idx.device)]
            self.sets.append(ProbeSet(prepare(e.raw(pick, "test")), e.labels(pick, "test"), e.task_id))
        self.task_mask = task_mask
        self.twin = self.make_twin(model)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="continual-eval") if background else None
        self.pending: list[tuple[int, Future | list[float | None]]] = []

    @staticmethod
    def make_twin(model: nn.Module) -> nn.Module:
        twin = copy.deepcopy(model).eval()
        for p in twin.parameters():
            p.requires_grad_(False)
        return twin

    def evaluate(self, seen: int, labels: Tensor | None = None) -> list[float | None]:
        """Accuracy of the twin on the first `seen` probe sets (one forward pass), None for the others.
        `labels`: a class mask of the labels that exist so far (online streams): others are never predicted."""
        with no_autograd(self.twin if self.model_forward else None):
            x = torch.cat([s.x for s in self.sets[:seen]])
            with self.kernel(len(x)):
                logits = self.predict(self.twin, x)
            counts = []
            start = 0
            for s in self.sets[:seen]:
                allowed = None if self.task_mask is None else self.task_mask[s.task]
                part = logits[start:start + len(s.x)]
                if labels is None:
                    counts.append(correct(part, s.y, allowed))
                else:
                    counts.append(masked_correct(part, s.y, labels if allowed is None else allowed & labels))
                start += len(s.x)
            hits = torch.stack(counts).tolist()
        return ([h / len(s.y) if len(s.y) else None for h, s in zip(hits, self.sets, strict=False)]
                + [None] * (len(self.sets) - seen))

    @torch.no_grad()
    def submit(self, step: int, seen: int, model: nn.Module, labels: Tensor | None = None) -> None:
        """Snapshot `model` (and `labels`, the class mask of online streams) now and evaluate it (in the
        background when enabled)."""
        labels = None if labels is None else labels.clone()
        if self.pending and isinstance(self.pending[-1][1], Future):
            self.pending[-1][1].result()  # the twin is free again
        mine, theirs = self.twin.state_dict(), model.state_dict()
        if [(k, v.shape) for k, v in mine.items()] != [(k, v.shape) for k, v in theirs.items()]:
            self.twin = self.make_twin(model)  # the model grew (a strategy's adapt_model)
        else:
            for a, b in zip(mine.values(), theirs.values(), strict=True):
                a.copy_(b)
        if self.pool is None:
            self.pending.append((step, self.evaluate(seen, labels)))
        else:
            self.pending.append((step, self.pool.submit(self.evaluate, seen, labels)))

    def collect(self, wait: bool = False) -> list[tuple[int, list[float | None]]]:
        """Finished evaluations in step order (all of them when `wait`)."""
        done = []
        while self.pending:
            step, item = self.pending[0]
            if isinstance(item, Future):
                if not (wait or item.done()):
                    break
                item = item.result()
            done.append((step, item))
            self.pending.pop(0)
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
