"""ER-ACE (Caccia et al. 2022, "New Insights on Reducing Abrupt Representation Change in Online Continual
Learning"): experience replay with an asymmetric cross-entropy.

    for each step on the new batch (x, y), once the memory holds past data (experience > 0):
        (x', y') <- draw from the memory
        C_new    <- the classes present in y
        loss = CE over C_new only (f(x), y)  +  CE over all classes (f(x'), y')
        SGD step; offer (x, y) to the reservoir

The incoming samples' logits of every class absent from the incoming batch are masked (set to the dtype's
lowest value), so new data cannot push down the logits of old classes; the replayed samples are scored over
every class. The two cross-entropies are averaged separately and summed (as in the authors' code and Mammoth's
models/er_ace.py), unlike ER's one mean over the concatenated rows. During the first experience nothing is
masked and no memory is replayed (the memory holds only current data), as in the authors' code.

Deviation: the authors' code also leaves unmasked every class above the largest label seen so far ("future"
classes). Here class labels need not be ordered by experience, so "above the largest seen label" does not mean
"not yet seen"; the mask covers exactly the classes absent from the incoming batch, as the paper states it.

Composition: ER-ACE replaces the task loss, so it is refused beside another part that does; parts that add
scored rows of their own (e.g. `er`) are not scored beside it (the loss reads only its own rows).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.replay import ReplayBase


def mask_absent(logits: Tensor, y: Tensor) -> Tensor:
    """The logits with every column whose class does not occur in `y` set to the dtype's lowest value."""
    present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    present[y] = True
    return logits.masked_fill(~present, torch.finfo(logits.dtype).min)


@register
class ERACE(ReplayBase):
    name = "er-ace"
    task_free = True
    description = "ER with asymmetric cross-entropy: new data scored only over the classes of its batch"

    def training_batch(self, batch: Batch) -> Batch:
        if batch.experience > 0:
            old = self.replay()
            if old is not None:
                batch.add(self.name, self.ctx.segment(old["raw"], old["y"]))
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor | None:
        if self.name not in batch:
            return None
        new, old = batch.new, batch[self.name]
        ce = self.ctx.cross_entropy
        return ce(mask_absent(out["new"], new.y), new.y) + ce(out[self.name], old.y)

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)
