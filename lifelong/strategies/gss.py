"""GSS-greedy (Aljundi et al. 2019, "Gradient based sample selection for online continual learning", Alg. 2).

    for each new batch (x, y):
        train on (x, y) together with replay_batch_size samples drawn uniformly from the memory (ER's loss)
        G <- per-sample gradients of `candidates` samples drawn from the memory
        for every new sample i:  g_i its gradient;  c_i = max_j cos(g_i, G_j) + 1      (in [0, 2])
            memory not full:  store (x_i, y_i) with score c_i
            else: draw a stored slot m with probability C_m / sum(C); with probability C_m / (C_m + c_i)
                  replace slot m by (x_i, y_i) and set C_m = c_i

A stored sample's score is its largest gradient similarity to the memory when it arrived: redundant samples
(score near 2) are the likely victims, and samples whose gradient points away from the memory's are kept.
Per-sample gradients (of the run's cross-entropy, w.r.t. every trainable parameter) are computed in one
vmapped pass (torch.func) without touching the model's gradients or running statistics; the similarity is one
matrix product.

As Mammoth's utils/gss_buffer.py: one random memory subset per incoming batch (the paper draws one per sample),
score 0.1 while the memory is still empty. Deviations, for a vectorised batch update: the new samples of one
batch are scored against the memory as it was before the batch (not against each other), and their victims are
drawn from the scores before the batch (a slot drawn twice keeps the later sample, as if offered in turn).
Mammoth scores a whole batch by its mean gradient; here each sample has its own, as in the paper.
Cost over ER: per-sample gradients of batch_size + candidates samples each step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.replay import ReplayBase
from lifelong.strategies.retrieval import child_generator, max_cosine, per_sample_gradients

EMPTY_SCORE = 0.1


@register
class GSS(ReplayBase):
    name = "gss"
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

    def scores_of(self, raw: Tensor, y: Tensor) -> Tensor:
        """c_i = 1 + the largest cosine similarity of each sample's gradient to those of a memory subset."""
        if self.size == 0:
            return torch.full((len(y),), EMPTY_SCORE, device=y.device)
        ctx = self.ctx
        sub = self.draw(self.hp["candidates"])
        x = ctx.prepare(torch.cat([raw, self.store["raw"].index_select(0, sub)]))
        labels = torch.cat([y, self.store["y"].index_select(0, sub)])
        g = per_sample_gradients(ctx.model, x, labels, ctx.cross_entropy)
        return max_cosine(g[:len(y)], g[len(y):]) + 1

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

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.offer(batch.new.raw, batch.new.y)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "store": self.store, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.store = state["size"], dict(state["store"])
        self.gen.set_state(state["rng"])
