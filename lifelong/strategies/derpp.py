"""DER++ (Buzzega et al. 2020): replay with the logits recorded when a sample was stored.

loss = CE(new) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y''), with (x', z') and (x'', y'') two
independent draws from a reservoir memory of (input, label, logits). beta = 0 is DER. As Mammoth's
models/derpp.py (the authors' code) but for one point: the new rows and both draws go through the model in
one concatenated forward (Mammoth forwards the three separately), the same for models without BatchNorm; with
BatchNorm the batch statistics, and the logits stored, mix them (effect unmeasured).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase


@register
class DERpp(ReplayBase):
    name = "derpp"
    task_free = True
    description = "dark experience replay++: replay labels and the logits recorded at storage time"
    params = {
        **BUFFER_PARAMS,
        "alpha": Param(0.1, "weight of the logit-matching (MSE) term", low=0.0),
        "beta": Param(0.5, "weight of the replayed-label (CE) term", low=0.0),
    }
    neutral = {"alpha": 0.0, "beta": 0.0}

    def training_batch(self, batch: Batch) -> Batch:
        if len(self.memory) == 0 or (self.hp["alpha"] == 0.0 and self.hp["beta"] == 0.0):
            return batch
        first, second = (self.memory.draw(self.hp["replay_batch_size"]) for _ in range(2))
        d = self.memory.take(first + second)  # both draws in one gather
        for part, rows in (("logits", slice(0, len(first))), ("labels", slice(len(first), None))):
            batch.add(f"{self.name}.{part}", self.ctx.segment(d["raw"][rows], d["y"][rows], logits=d["logits"][rows]))
        return batch

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        if f"{self.name}.logits" not in batch:
            return None
        a, b = batch[f"{self.name}.logits"], batch[f"{self.name}.labels"]
        loss = self.hp["alpha"] * F.mse_loss(out[f"{self.name}.logits"], a.extras["logits"])
        return loss + self.hp["beta"] * self.ctx.cross_entropy(out[f"{self.name}.labels"], b.y)

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y, logits=out["new"].detach())
