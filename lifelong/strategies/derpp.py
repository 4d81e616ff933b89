"""DER++ (Buzzega et al. 2020): replay with the logits recorded when a sample was stored.

loss = CE(new) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y''), with (x', z') and (x'', y'') two
independent draws from a reservoir memory of (input, label, logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.params import Param
from lifelong.strategies.base import Batch, register
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase


@register
class DERpp(ReplayBase):
    name = "derpp"
    description = "dark experience replay++: replay labels and the logits recorded at storage time"
    params = {
        **BUFFER_PARAMS,
        "alpha": Param(0.1, "weight of the logit-matching (MSE) term", low=0.0),
        "beta": Param(0.5, "weight of the replayed-label (CE) term", low=0.0),
    }

    def training_batch(self, batch: Batch) -> Batch:
        self.drawn: list[dict[str, Tensor]] = []
        if len(self.memory) == 0 or (self.hp["alpha"] == 0.0 and self.hp["beta"] == 0.0):
            return batch
        self.drawn = [self.memory.sample(self.hp["replay_batch_size"]) for _ in range(2)]
        extra = [self.ctx.prepare(d["raw"]) for d in self.drawn]
        return Batch(torch.cat([batch.x, *extra]), batch.y, batch.raw, batch.task, batch.experience, batch.n_new)

    def penalty(self, batch: Batch, logits: Tensor) -> Tensor | None:
        if not self.drawn:
            return None
        n, k = batch.n_new, len(self.drawn[0]["y"])
        first, second = logits[n:n + k], logits[n + k:n + 2 * k]
        a = self.drawn[0]
        b = self.drawn[1]
        loss = self.hp["alpha"] * F.mse_loss(first, a["logits"])
        return loss + self.hp["beta"] * self.ctx.cross_entropy(second, b["y"])

    def after_step(self, batch: Batch, logits: Tensor) -> None:
        n = batch.n_new
        self.memory.add(raw=batch.raw, y=batch.y[:n], logits=logits[:n].detach())
