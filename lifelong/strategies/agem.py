"""Averaged GEM (A-GEM; Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019).

Every step, after the gradient g of the step's loss is computed:

    draw a reference batch (x_ref, y_ref) of `replay_batch_size` samples from the episodic memory M
    g_ref = gradient of the loss on (x_ref, y_ref)
    if g . g_ref < 0:  g <- g - (g . g_ref / g_ref . g_ref) g_ref
    take the optimizer step with g
    at the end of experience t: add its samples to M

As in the paper and the authors' code (facebookresearch/agem, `create_stochastic_gem_ops`), the memory holds only
past experiences (never the current one), the reference gradient is one gradient over a random memory batch
(the authors' default memory batch is 256), and the projection is applied only when the dot product is negative.

Deviations: the memory is one reservoir of `buffer_size` (500) samples over all past experiences (each experience
is offered in a random order when it ends), so each past experience holds about buffer_size / t samples rather
than the paper's fixed per-task slots; the optimizer is the run's (the paper uses plain SGD: with momentum the
step mixes projected gradients of several steps); in a composition the projected gradient is the total one
(task loss plus every part's penalties).
"""

from __future__ import annotations

from typing import Any

import torch

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, register
from lifelong.strategies.projection import agem_project, flatten, write_back
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase


@register
class AGEM(ReplayBase):
    name = "agem"
    description = "averaged GEM: project the gradient when it conflicts with a memory batch's gradient"
    params = {
        **BUFFER_PARAMS,
        "replay_batch_size": Param(256, "memory batch for the reference gradient (256: the authors')", low=1),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.projected = 0  # steps whose gradient was projected (a diagnostic, checkpointed)

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        ref = self.replay()
        if ref is None:
            return
        ctx, params = self.ctx, grads.params
        seg = ctx.segment(ref["raw"], ref["y"])
        with torch.enable_grad():
            loss = ctx.cross_entropy(ctx.model(seg.x), seg.y)
            g_ref = torch.autograd.grad(loss, params, allow_unused=True)
        g = flatten(grads.total(), params)
        new = agem_project(g, flatten(g_ref, params))
        if new is not g:
            self.projected += 1
            write_back(new, params)

    def end_experience(self, exp: Experience) -> None:
        order = exp.train_idx[torch.randperm(exp.num_train, generator=self.ctx.generator)]
        self.memory.add(raw=exp.raw(order), y=exp.labels(order))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "projected": self.projected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.projected = state["projected"]
