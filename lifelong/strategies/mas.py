"""Memory Aware Synapses (MAS; Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, ECCV 2018).

Importance is unsupervised: the sensitivity of the squared L2 norm of the network's output to each parameter,

    Omega_i = 1/N sum_k | d ||F(x_k; theta)||_2^2 / d theta_i |      (N samples of the experience just learned)

accumulated over experiences (Omega <- Omega + Omega_t, as the authors' code sums its omegas), with the anchor
theta* = the parameters at the end of the latest experience; the loss is  L_t(theta) + lambda * sum_i Omega_i
(theta_i - theta*_i)^2  (no 1/2, as in the paper's eq. 4).

The per-sample gradients are exact: for networks built only of nn.Linear layers the absolute per-sample gradient
of a weight is |d_k| |a_k|^T (output gradient times input), so the sum over samples is one matrix product
|D|^T |A|; other networks use torch.func per-sample gradients. F is the logits vector over all classes
(class-incremental, the paper's single head) or the sample's task head (task-aware streams, the paper's
multi-head setting).

Deviations: importance is estimated on `mas_samples` random training samples of the experience (default 1000;
the paper uses the training set); the authors' released code averages the absolute values of mini-batch gradients
(of the mean squared output), an approximation of the per-sample mean that this class computes exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import register
from lifelong.strategies.regularization import QuadraticAnchor


def mas_importance(model: torch.nn.Module, x: Tensor, mask: Tensor | None = None,
                   chunk: int = 256) -> dict[str, Tensor]:
    """Mean over the rows of x of |d ||f(x)||^2 / d theta| for every parameter (mask: rows x classes kept)."""
    was_training = model.training
    model.eval()
    linear_only = all(isinstance(m, torch.nn.Linear) for m in model.modules()
                      if next(m.parameters(False), None) is not None)
    total = (_linear_sum if linear_only else _vmap_sum)(model, x, mask, chunk)
    model.train(was_training)
    return {k: v / len(x) for k, v in total.items()}


def _squared_norm(logits: Tensor, mask: Tensor | None) -> Tensor:
    if mask is not None:
        logits = logits * mask
    return logits.pow(2).sum()


def _linear_sum(model: torch.nn.Module, x: Tensor, mask: Tensor | None, chunk: int) -> dict[str, Tensor]:
    names = {m: n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    total = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    inputs: dict[torch.nn.Module, Tensor] = {}
    outputs: dict[torch.nn.Module, Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: inputs.__setitem__(mod, inp[0].detach()))
             for m in names]
    hooks += [m.register_full_backward_hook(lambda mod, gin, gout: outputs.__setitem__(mod, gout[0].detach()))
              for m in names]
    try:
        for s in range(0, len(x), chunk):
            xs = x[s:s + chunk].detach().requires_grad_(True)
            torch.autograd.grad(_squared_norm(model(xs), None if mask is None else mask[s:s + chunk]), xs)
            for m, prefix in names.items():
                d, a = outputs[m].abs(), inputs[m].abs()
                total[f"{prefix}.weight" if prefix else "weight"] += d.T @ a
                if m.bias is not None:
                    total[f"{prefix}.bias" if prefix else "bias"] += d.sum(0)
    finally:
        for h in hooks:
            h.remove()
    return total


def _vmap_sum(model: torch.nn.Module, x: Tensor, mask: Tensor | None, chunk: int) -> dict[str, Tensor]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def norm(p: dict[str, Tensor], xi: Tensor, mi: Tensor | None) -> Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return _squared_norm(logits, None if mi is None else mi.unsqueeze(0))

    total = {k: torch.zeros_like(v) for k, v in params.items()}
    per_sample = vmap(grad(norm), in_dims=(None, 0, None if mask is None else 0))
    step = min(chunk, 64)
    for s in range(0, len(x), step):
        m = None if mask is None else mask[s:s + step]
        for k, g in per_sample(params, x[s:s + step], m).items():
            total[k] += g.abs().sum(0)
    return total


@register
class MAS(QuadraticAnchor):
    name = "mas"
    description = "memory aware synapses: quadratic penalty weighted by the output norm's sensitivity (unsupervised)"
    params = {
        "mas_lambda": Param(0.1, "penalty strength lambda (1, the paper's, diverges on split-fashion-mnist seed 1)",
                            low=0.0),
        "mas_samples": Param(1000, "samples of the experience used to estimate the importance", low=1),
    }
    neutral = {"mas_lambda": 0.0}
    strength_param = "mas_lambda"
    penalty_scale = 1.0

    def importance(self, exp: Experience) -> dict[str, Tensor]:
        ctx = self.ctx
        n = min(self.hp["mas_samples"], exp.num_train)
        pick = exp.train_idx[torch.randperm(exp.num_train, generator=ctx.generator)[:n]]
        x = ctx.prepare(exp.raw(pick)).to(ctx.device)
        mask = None
        if ctx.stream.task_aware:
            mask = ctx.stream.task_class_mask().to(ctx.device)[torch.full((n,), exp.task_id, device=ctx.device)]
        omega = mas_importance(ctx.model, x, mask)
        if not all(torch.isfinite(v).all() for v in omega.values()):
            raise LifelongError(f"mas: the importance after experience {exp.index} is not finite (the model's "
                                "outputs overflow)")
        return omega

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        new = self.importance(exp)
        if self.importances:
            new = {k: self.importances[0][k] + v for k, v in new.items()}
        self.importances, self.anchors = [new], [self.snapshot()]
        self.consolidate()
