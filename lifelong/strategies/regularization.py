"""Parameter regularisation: EWC (Kirkpatrick et al. 2017), online EWC (Schwarz et al. 2018) and L2.

Each keeps anchors theta*_t and importances F_t and adds  lambda/2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2.
The Fisher diagonal is the empirical Fisher: the mean over samples of squared per-sample gradients of the
log-likelihood of the true label, computed exactly with torch.func (not squared minibatch gradients).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Strategy, register


def fisher_diagonal(model: torch.nn.Module, x: Tensor, y: Tensor, task_mask: Tensor | None = None,
                    chunk: int = 256) -> dict[str, Tensor]:
    """Mean over samples of the squared per-sample gradient of -log p(y|x) for every parameter."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def nll(p: dict[str, Tensor], xi: Tensor, yi: Tensor, mi: Tensor | None) -> Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        if mi is not None:
            logits = logits.masked_fill(~mi, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    was_training = model.training
    model.eval()
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    per_sample = vmap(grad(nll), in_dims=(None, 0, 0, None if task_mask is None else 0))
    for s in range(0, len(x), chunk):
        m = None if task_mask is None else task_mask[s:s + chunk]
        grads = per_sample(params, x[s:s + chunk], y[s:s + chunk], m)
        for k, g in grads.items():
            total[k] += g.pow(2).sum(0)
    model.train(was_training)
    return {k: v / len(x) for k, v in total.items()}


class QuadraticAnchor(Strategy):
    """Shared machinery: anchors and importances, and the quadratic penalty over them."""

    params = {"ewc_lambda": Param(100.0, "penalty strength lambda", low=0.0)}

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.anchors: list[dict[str, Tensor]] = []
        self.importances: list[dict[str, Tensor]] = []

    @property
    def strength(self) -> float:
        return self.hp["ewc_lambda"]

    def penalty(self, batch: Batch, logits: Tensor) -> Tensor | None:
        if not self.anchors or self.strength == 0.0:
            return None
        total = logits.new_zeros(())
        for name, p in self.ctx.model.named_parameters():
            for anchor, imp in zip(self.anchors, self.importances, strict=True):
                total = total + (imp[name] * (p - anchor[name]).pow(2)).sum()
        return 0.5 * self.strength * total

    def snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.ctx.model.named_parameters()}

    def importance(self, exp: Experience) -> dict[str, Tensor]:
        """Per-parameter importance of the experience just learned: the Fisher diagonal."""
        ctx = self.ctx
        n = min(self.hp["fisher_samples"], exp.num_train)
        pick = exp.train_idx[torch.randperm(exp.num_train, generator=ctx.generator)[:n]]
        x = ctx.prepare(exp.raw(pick)).to(ctx.device)
        y = exp.labels(pick).to(ctx.device)
        mask = None
        if ctx.stream.task_aware:
            mask = ctx.stream.task_class_mask().to(ctx.device)[torch.full_like(y, exp.task_id)]
        return fisher_diagonal(ctx.model, x, y, mask)

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors, "importances": self.importances}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors, self.importances = state["anchors"], state["importances"]


@register
class EWC(QuadraticAnchor):
    """Elastic weight consolidation: one anchor and Fisher per past experience."""

    name = "ewc"
    description = "elastic weight consolidation: quadratic penalty weighted by the Fisher diagonal"
    params = {
        "ewc_lambda": Param(100.0, "penalty strength lambda", low=0.0),
        "fisher_samples": Param(1000, "samples used to estimate the Fisher diagonal", low=1),
    }

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        self.importances.append(self.importance(exp))
        self.anchors.append(self.snapshot())


@register
class OnlineEWC(QuadraticAnchor):
    """Online EWC: one running Fisher F <- gamma*F + F_t and one anchor (the latest parameters)."""

    name = "online-ewc"
    description = "online EWC: a single decayed Fisher and the latest anchor (constant memory)"
    params = {
        "ewc_lambda": Param(100.0, "penalty strength lambda", low=0.0),
        "gamma": Param(1.0, "decay of the running Fisher", low=0.0, high=1.0),
        "fisher_samples": Param(1000, "samples used to estimate the Fisher diagonal", low=1),
    }

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        new = self.importance(exp)
        if self.importances:
            old = self.importances[0]
            new = {k: self.hp["gamma"] * old[k] + v for k, v in new.items()}
        self.importances = [new]
        self.anchors = [self.snapshot()]


@register
class L2(QuadraticAnchor):
    """Plain L2 pull towards the parameters at the end of the previous experience (all importances 1)."""

    name = "l2"
    description = "L2 penalty towards the previous experience's parameters"
    params = {"ewc_lambda": Param(1.0, "penalty strength lambda", low=0.0)}

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        self.anchors = [self.snapshot()]
        self.importances = [{k: torch.ones_like(v) for k, v in self.anchors[0].items()}]
