"""Gradient Episodic Memory (GEM; Lopez-Paz & Ranzato, NeurIPS 2017).

Memory: `buffer_size` samples split evenly over the stream's experiences (m = buffer_size // experiences each,
as the paper's M / T). Every step of experience t, with g the gradient of the step's loss:

    g_k = gradient of the loss on memory M_k, for every past experience k < t
    if g . g_k >= 0 for all k: keep g
    else: g <- argmin_x 1/2 ||x - g||^2  s.t.  g_k . x >= 0 for all k

The QP is solved exactly in its dual (as the paper, eq. 10-11): with G the t' x p matrix of past gradients,
v* = argmin_{v >= 0} 1/2 v^T G G^T v + g^T G^T v and x = g + G^T v*. The dual has one variable per past
experience; it is solved in float64 by an active-set non-negative least-squares solver on the Gram matrix
(`projection.nonneg_qp`, Lawson-Hanson; no quadprog). `margin` is the authors' `memory_strength` (their code
bounds the dual variables below by it, biasing the update towards backward transfer; 0 is the paper's exact
projection; it only acts when some constraint is violated).

Cost per step with t' past experiences: one forward of the t' * m memory samples and t' backward passes
(batched through torch.autograd.grad with is_grads_batched), a t' x p Gram product, and a QP of t' variables
(microseconds): it grows linearly with the number of past experiences, as the algorithm must.

Deviations: the memory of an experience is m samples drawn at random from it when it ends (the authors' code keeps
the last m samples seen, a ring buffer: the same distribution for shuffled data); the optimizer is the run's
(the paper uses plain SGD); in a composition the projected gradient is the total one. The authors add 1e-3 to
the diagonal of the memories' Gram matrix before solving (only matters when it is nearly singular), and keep 256
samples per task (100 here: 500 / 5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, Strategy, register
from lifelong.strategies.projection import flatten, gem_project, per_sample_cross_entropy, write_back


@register
class GEM(Strategy):
    name = "gem"
    family = "replay"
    description = "gradient episodic memory: project the gradient so no past experience's memory loss rises"
    params = {
        "buffer_size": Param(500, "memory samples, split evenly over the stream's experiences", low=1),
        "margin": Param(0.5, "memory strength gamma: lower bound of the dual variables (0: exact projection; "
                        "0.5: the authors' setting)", low=0.0),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.raw: list[Tensor] = []  # memory of each past experience, in order
        self.y: list[Tensor] = []
        self.projected = 0

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if self.hp["buffer_size"] < len(ctx.stream):
            raise LifelongError(f"gem: buffer_size={self.hp['buffer_size']} is smaller than the number of "
                                f"experiences ({len(ctx.stream)}): each needs at least one memory sample")

    def past_gradients(self, params: list) -> Tensor:
        """Rows: the gradient of the loss on each past experience's memory, one forward and backward over that
        experience's samples only (the work grows linearly with the memory, not with its square)."""
        ctx, rows = self.ctx, []
        with torch.enable_grad():
            for raw, y in zip(self.raw, self.y, strict=True):
                seg = ctx.segment(raw, y)
                logits = ctx.model(seg.x)
                mask = None if not ctx.stream.task_aware else ctx.stream.task_class_mask().to(logits.device)[seg.task]
                loss = per_sample_cross_entropy(logits, seg.y, mask).mean()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                rows.append(torch.cat([(p.new_zeros(p.numel()) if g is None else g.reshape(-1))
                                       for g, p in zip(grads, params, strict=True)]))
        return torch.stack(rows)

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        if not self.y:
            return
        params = grads.params
        g = flatten(grads.total(), params)
        new = gem_project(g, self.past_gradients(params), self.hp["margin"])
        if new is not g:
            self.projected += 1
            write_back(new, params)

    def end_experience(self, exp: Experience) -> None:
        m = max(1, self.hp["buffer_size"] // len(self.ctx.stream))
        pick = exp.train_idx[torch.randperm(exp.num_train, generator=self.ctx.generator)[:m]]
        self.raw.append(exp.raw(pick))
        self.y.append(exp.labels(pick))

    def state_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "y": self.y, "projected": self.projected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw, self.y, self.projected = list(state["raw"]), list(state["y"]), state["projected"]
