"""GSS-greedy (Aljundi et al. 2019, "Gradient based sample selection for online continual learning", Alg. 2).

    for each new batch (x, y):
        train on (x, y) together with replay_batch_size samples drawn uniformly from the memory (ER's loss)
        G <- per-sample gradients of `candidates` samples drawn from the memory
        for every new sample i:  g_i its gradient;  c_i = max_j cos(g_i, G_j) + 1      (in [0, 2])
            memory not full:  store (x_i, y_i) with score c_i
            else, only if c_B < 1 (c of the batch's gradient: a negative cosine to every G_j):
                  draw a stored slot m with probability C_m / sum(C); with probability C_m / (C_m + c_i)
                  replace slot m by (x_i, y_i) and set C_m = c_i

A stored sample's score is its largest gradient similarity to the memory when it arrived: redundant samples
(score near 2) are the likely victims, and samples whose gradient points away from the memory's are kept.
Per-sample gradients (of the run's cross-entropy, w.r.t. every trainable parameter) are computed in one
vmapped pass (torch.func) without touching the model's gradients or running statistics; the similarity is one
matrix product.

As Mammoth's utils/gss_buffer.py and the authors' GSS_Greedy.py (change_th 0): one random memory subset per
incoming batch (the paper draws one per sample), score 0.1 while the memory is still empty, and the c < 1 gate is
applied to the batch's gradient (the mean loss's): a full memory considers a batch's samples only when the batch
as a whole points away from the memory. Without the gate every new sample replaces a stored one with probability
about 1/2, so the memory holds little more than the current experience (class-incremental Split-FashionMNIST:
34 % final accuracy, classes of experiences 2-3 all evicted by the end of experience 3; with it, see
docs/zoo/gss.md). Memory gradients: of single samples as Mammoth (the authors' code: of mini-batches of 10,
n_constraints), `candidates` of them. Deviations, for a vectorised batch update: the new samples of one batch
are scored against the memory as it was before the batch (not against each other), and their victims are
drawn from the scores before the batch (a slot drawn twice keeps the later sample, as if offered in turn).
The gate tests the batch's gradient as both codes do (the paper's box tests each sample's c_i); past the gate
each sample has its own score.
Cost over ER, each step: per-sample gradients of `candidates` memory samples and one batch gradient; the
per-sample gradients of the new batch only while the memory fills or when the gate opens.
Deviations (audit 2026-12-02, effects within seed noise): the victim is drawn with probability C / sum C, as
Mammoth (the authors min-max normalise the scores, so the lowest-scored sample is never evicted); the empty-memory
score is Mammoth's 0.1 on the +1 scale (the authors' 0.1 is a raw cosine, 1.1 here); gradients are taken in train
mode (both codes use eval mode: the same for models without BatchNorm or dropout).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.replay import ReplayBase
from lifelong.strategies.retrieval import batch_gradient, child_generator, per_sample_gradients

EMPTY_SCORE = 0.1
GATE = 1.0  # a full memory takes samples only from batches whose gradient has c < GATE (cosine < 0)


def max_cosine_to(a: Tensor, unit: Tensor) -> Tensor:
    """`retrieval.max_cosine(a, b)` with `unit = F.normalize(b, dim=1)` already computed (the same numbers)."""
    return (F.normalize(a, dim=1) @ unit.T).max(1).values


@register
class GSS(ReplayBase):
    name = "gss"
    task_free = True
    description = "gradient-based sample selection (greedy): keep samples whose gradients differ from the memory's"
    params = {
        "buffer_size": Param(500, "samples kept in the replay memory", low=1),
        "replay_batch_size": Param(32, "replayed samples added to each step", low=1),
        "candidates": Param(10, "memory samples whose gradients each new sample is compared with", low=1),
    }

    def setup(self, ctx) -> None:
        self.ctx = ctx
        self.gen = child_generator(ctx.generator)
        self.size = 0
        self.store: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    # --- memory --------------------------------------------------------------------------------------
    def draw(self, k: int) -> Tensor:
        """Slots of k stored samples drawn uniformly without replacement."""
        return torch.randperm(self.size, generator=self.gen)[:k].to(self.store["y"].device)

    def scores_of(self, raw: Tensor, y: Tensor) -> Tensor | None:
        """c_i = 1 + the largest cosine similarity of each sample's gradient to those of a memory subset; None
        when the memory is full and the batch's own gradient has c >= 1 (Alg. 2's gate: no sample may enter)."""
        if self.size == 0:
            return torch.full((len(y),), EMPTY_SCORE, device=y.device)
        ctx = self.ctx
        sub = self.draw(self.hp["candidates"])
        mem = per_sample_gradients(ctx.model, ctx.prepare(self.store["raw"].index_select(0, sub)),
                                   self.store["y"].index_select(0, sub), ctx.cross_entropy)
        mem = F.normalize(mem, dim=1)  # once for the gate and the samples (max_cosine's arithmetic)
        x = ctx.prepare(raw)
        if self.size >= self.hp["buffer_size"]:
            g = batch_gradient(ctx.model, x, y, ctx.cross_entropy)
            if float(max_cosine_to(g.unsqueeze(0), mem)[0]) + 1 >= GATE:
                return None
        return max_cosine_to(per_sample_gradients(ctx.model, x, y, ctx.cross_entropy), mem) + 1

    def slots_for(self, c: Tensor) -> Tensor:
        """The slot each new sample (score c) takes, -1 where it is not stored."""
        n, cap = len(c), self.hp["buffer_size"]
        slots = torch.full((n,), -1, dtype=torch.long)
        free = min(n, cap - self.size)
        slots[:free] = torch.arange(self.size, self.size + free)
        rest = n - free
        if rest and self.size > 0:
            s = self.store["score"].double().cpu()
            if s.sum() > 0:
                victims = torch.multinomial(s, rest, replacement=True, generator=self.gen)
                r = torch.rand(rest, generator=self.gen, dtype=torch.float64)
                sv, cv = s[victims], c[free:].double().cpu()
                keep = r < sv / (sv + cv)
                slots[free:] = torch.where(keep, victims, -1)
        return slots

    def offer(self, raw: Tensor, y: Tensor) -> None:
        """Score the new samples and store them by GSS-greedy's rule."""
        c = self.scores_of(raw, y)
        if c is None:
            return
        if not self.store:
            cap = self.hp["buffer_size"]
            self.store = {"raw": raw.new_zeros((cap, *raw.shape[1:])), "y": y.new_zeros(cap),
                          "score": c.new_zeros(cap)}
        slots = self.slots_for(c)
        kept = (slots >= 0).nonzero().squeeze(1)
        if len(kept) == 0:
            return
        dest = slots[kept]
        last = torch.zeros(len(dest), dtype=torch.bool)  # a slot drawn twice keeps the later sample
        order = torch.arange(len(dest))
        last_of = torch.full((int(dest.max()) + 1,), -1, dtype=torch.long).scatter_reduce(
            0, dest, order, reduce="amax")
        last[last_of[dest] == order] = True
        dest, src = dest[last].to(y.device), kept[last].to(y.device)
        for key, v in (("raw", raw), ("y", y), ("score", c)):
            self.store[key][dest] = v[src].to(self.store[key].dtype)
        self.size = min(self.hp["buffer_size"], self.size + int((slots >= self.size).sum()))

    # --- hooks ---------------------------------------------------------------------------------------
    def training_batch(self, batch: Batch) -> Batch:
        if self.size:
            pick = self.draw(self.hp["replay_batch_size"])
            batch.add(self.name, self.ctx.segment(self.store["raw"].index_select(0, pick),
                                                  self.store["y"].index_select(0, pick), scored=True))
        return batch

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.offer(batch.new.raw, batch.new.y)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "store": self.store, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.store = state["size"], dict(state["store"])
        self.gen.set_state(state["rng"])
