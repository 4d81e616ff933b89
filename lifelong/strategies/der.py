"""DER (Buzzega et al. 2020, "Dark Experience Replay"): replay the logits recorded when a sample was stored.

    for each step on the new batch (x, y):
        (x', z') <- draw from a reservoir memory of (input, logits)
        loss = CE(f(x), y) + alpha * || f(x') - z' ||^2          (mean squared error over the logits)
        SGD step; offer (x, f(x)) to the reservoir

DER++ without its replayed-label term (beta = 0), as Mammoth's models/der.py: one memory draw per step (DER++
draws twice). Deviation: no data augmentation (the library has none), so the stored logits are those of the
un-augmented input, as in DER++ here. The new and replayed rows go through the model in one concatenated
forward (Mammoth forwards them separately): the same for models without BatchNorm; with BatchNorm (resnet18)
the batch statistics, and the logits stored, mix new and replayed rows (effect unmeasured).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.derpp import DERpp
from lifelong.strategies.replay import BUFFER_PARAMS


@register
class DER(DERpp):
    name = "der"
    task_free = True
    description = "dark experience replay: match the logits recorded when each memory sample was stored"
    params = {
        **BUFFER_PARAMS,
        "alpha": Param(1.0, "weight of the logit-matching (MSE) term (swept: docs/zoo/der.md)", low=0.0),
    }
    neutral = {"alpha": 0.0}

    def training_batch(self, batch: Batch) -> Batch:
        if len(self.memory) == 0 or self.hp["alpha"] == 0.0:
            return batch
        d = self.memory.sample(self.hp["replay_batch_size"])
        batch.add(f"{self.name}.logits", self.ctx.segment(d["raw"], d["y"], logits=d["logits"]))
        return batch

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        key = f"{self.name}.logits"
        if key not in batch:
            return None
        return self.hp["alpha"] * F.mse_loss(out[key], batch[key].extras["logits"])
