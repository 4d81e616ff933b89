"""Parameter regularisation: EWC (Kirkpatrick et al. 2017), online EWC (Schwarz et al. 2018) and L2.

Each keeps anchors theta*_t and importances F_t and adds  lambda/2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2.
The Fisher diagonal is the empirical Fisher: the mean over samples of squared per-sample gradients of the
log-likelihood of the true label, computed exactly with torch.func (not squared minibatch gradients).

Defaults (docs/regularisation-defaults.md, a sweep on the default MLP/SGD settings): ewc_lambda=1000 for EWC and
online EWC (100 equals naive within noise on task-incremental Split-FashionMNIST; 1e4 diverges on the
class-incremental one and on task-split-digits, so 1000 keeps a margin below the instability), l2_lambda=1
(best final accuracy; 10 already costs plasticity). Authors' values are not transferable: van de Ven's
continual-learning repository uses 1e5 for task-incremental Split MNIST with Adam and 2000 iterations per task.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, Strategy, register


def fisher_diagonal(model: torch.nn.Module, x: Tensor, y: Tensor, task_mask: Tensor | None = None,
                    chunk: int = 256) -> dict[str, Tensor]:
    """Mean over samples of the squared per-sample gradient of -log p(y|x) for every parameter.

    Networks whose parameters all sit in nn.Linear layers take an exact shortcut: the per-sample gradient
    of W is the outer product of the output gradient d and the input a, so the sum over samples of its square
    is (d^2)^T (a^2), one matrix product per chunk. Other networks use per-sample gradients from torch.func.
    """
    was_training = model.training
    model.eval()
    linear_only = all(isinstance(m, torch.nn.Linear) for m in model.modules() if next(m.parameters(False), None)
                      is not None)
    total = linear_fisher_sum(model, x, y, task_mask, chunk) if linear_only else vmap_fisher_sum(
        model, x, y, task_mask, min(chunk, 64))
    model.train(was_training)
    return {k: v / len(x) for k, v in total.items()}


def masked_nll_sum(logits: Tensor, y: Tensor, mask: Tensor | None) -> Tensor:
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, y, reduction="sum")


def linear_fisher_sum(model: torch.nn.Module, x: Tensor, y: Tensor, task_mask: Tensor | None,
                      chunk: int) -> dict[str, Tensor]:
    names = {m: n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    total = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    inputs: dict[torch.nn.Module, Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: inputs.__setitem__(mod, inp[0].detach()))
             for m in names]
    outputs: dict[torch.nn.Module, Tensor] = {}
    hooks += [m.register_full_backward_hook(lambda mod, gin, gout: outputs.__setitem__(mod, gout[0].detach()))
              for m in names]
    try:
        for s in range(0, len(x), chunk):
            xs = x[s:s + chunk].detach().requires_grad_(True)  # so every layer's backward hook fires
            mask = None if task_mask is None else task_mask[s:s + chunk]
            loss = masked_nll_sum(model(xs), y[s:s + chunk], mask)
            torch.autograd.grad(loss, xs)
            for m, prefix in names.items():
                d2, a2 = outputs[m].pow(2), inputs[m].pow(2)
                total[f"{prefix}.weight" if prefix else "weight"] += d2.T @ a2
                if m.bias is not None:
                    total[f"{prefix}.bias" if prefix else "bias"] += d2.sum(0)
    finally:
        for h in hooks:
            h.remove()
    return total


def vmap_fisher_sum(model: torch.nn.Module, x: Tensor, y: Tensor, task_mask: Tensor | None,
                    chunk: int) -> dict[str, Tensor]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def nll(p: dict[str, Tensor], xi: Tensor, yi: Tensor, mi: Tensor | None) -> Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return masked_nll_sum(logits, yi.unsqueeze(0), None if mi is None else mi.unsqueeze(0))

    total = {k: torch.zeros_like(v) for k, v in params.items()}
    per_sample = vmap(grad(nll), in_dims=(None, 0, 0, None if task_mask is None else 0))
    for s in range(0, len(x), chunk):
        m = None if task_mask is None else task_mask[s:s + chunk]
        for k, g in per_sample(params, x[s:s + chunk], y[s:s + chunk], m).items():
            total[k] += g.pow(2).sum(0)
    return total


STRENGTH = Param(1000.0, "penalty strength lambda (1000: from a sweep on Split-FashionMNIST, see "
                 "docs/regularisation-defaults.md; 100 did nothing, 1e4 diverges class-incrementally)", low=0.0,
                 search=(10.0, 3000.0))
FISHER_SAMPLES = Param(1000, "samples used to estimate the Fisher diagonal", low=1)


class QuadraticAnchor(Strategy):
    """Shared machinery: anchors and importances, and the quadratic penalty over them. `strength_param` names
    the hyperparameter that holds lambda."""

    family = "regularisation"
    strength_param: ClassVar[str] = "ewc_lambda"
    penalty_scale: ClassVar[float] = 0.5  # the penalty is scale * lambda * sum F (p - a)^2

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.anchors: list[dict[str, Tensor]] = []
        self.importances: list[dict[str, Tensor]] = []
        self.merged: dict[str, tuple[Tensor, Tensor]] = {}
        self.offset = 0.0

    @property
    def strength(self) -> float:
        return self.hp[self.strength_param]

    def consolidate(self) -> None:
        """Fold all quadratic terms into one per parameter, so each step costs the same however many
        experiences have passed:  sum_t F_t (p - a_t)^2 = F (p - m)^2 + c,  F = sum_t F_t,
        m = sum_t F_t a_t / F (where F > 0), c = sum_t F_t a_t^2 - F m^2."""
        self.merged, self.offset = {}, 0.0
        for name in self.anchors[0] if self.anchors else ():
            F = sum(imp[name] for imp in self.importances)
            Fa = sum(imp[name] * a[name] for imp, a in zip(self.importances, self.anchors, strict=True))
            m = torch.where(F > 0, Fa / F.clamp_min(torch.finfo(F.dtype).tiny), self.anchors[-1][name])
            Faa = sum(imp[name] * a[name].pow(2) for imp, a in zip(self.importances, self.anchors, strict=True))
            self.offset += float((Faa - F * m.pow(2)).sum())
            self.merged[name] = (F, m)

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        if not self.merged or self.strength == 0.0:
            return None
        total = out.all.new_tensor(self.offset)
        for name, p in self.ctx.model.named_parameters():
            F, m = self.merged[name]
            total = total + (F * (p - m).pow(2)).sum()
        return self.penalty_scale * self.strength * total

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
        fisher = fisher_diagonal(ctx.model, x, y, mask)
        if not all(torch.isfinite(v).all() for v in fisher.values()):
            raise LifelongError(f"{self.name}: the Fisher information after experience {exp.index} is not finite "
                                "(the model's eval-mode outputs overflow; with BatchNorm this means its running "
                                "statistics are not settled yet: train longer, or use a model without BatchNorm)")
        return fisher

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors, "importances": self.importances}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors, self.importances = state["anchors"], state["importances"]
        self.consolidate()


@register
class EWC(QuadraticAnchor):
    """Elastic weight consolidation: one anchor and Fisher per past experience."""

    name = "ewc"
    description = "elastic weight consolidation: quadratic penalty weighted by the Fisher diagonal"
    params = {
        "ewc_lambda": STRENGTH,
        "fisher_samples": FISHER_SAMPLES,
    }
    neutral = {"ewc_lambda": 0.0}

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        self.importances.append(self.importance(exp))
        self.anchors.append(self.snapshot())
        self.consolidate()


@register
class OnlineEWC(QuadraticAnchor):
    """Online EWC: one running Fisher F <- gamma*F + F_t and one anchor (the latest parameters).

    The penalty weighs the anchor distance by F itself, as Mammoth's ewc_on and Avalanche do; Schwarz et al.
    (Progress & Compress, eq. 4) write gamma * F for the next task's penalty: the same with lambda scaled by
    gamma (no difference at the default gamma = 1). Mammoth also leaves out the 1/2 (lambda 1000 here is
    about 500 there) and weighs its Fisher by the probability of the true label."""

    name = "online-ewc"
    description = "online EWC: a single decayed Fisher and the latest anchor (constant memory)"
    params = {
        "ewc_lambda": STRENGTH,
        "gamma": Param(1.0, "decay of the running Fisher", low=0.0, high=1.0),
        "fisher_samples": FISHER_SAMPLES,
    }
    neutral = {"ewc_lambda": 0.0}

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        new = self.importance(exp)
        if self.importances:
            old = self.importances[0]
            new = {k: self.hp["gamma"] * old[k] + v for k, v in new.items()}
        self.importances = [new]
        self.anchors = [self.snapshot()]
        self.consolidate()


@register
class L2(QuadraticAnchor):
    """Plain L2 pull towards the parameters at the end of the previous experience (all importances 1)."""

    name = "l2"
    description = "L2 penalty towards the previous experience's parameters"
    strength_param = "l2_lambda"
    params = {"l2_lambda": Param(1.0, "penalty strength lambda (1: best of a sweep, "
                                         "docs/regularisation-defaults.md)", low=0.0)}
    neutral = {"l2_lambda": 0.0}

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        self.anchors = [self.snapshot()]
        self.importances = [{k: torch.ones_like(v) for k, v in self.anchors[0].items()}]
        self.consolidate()
