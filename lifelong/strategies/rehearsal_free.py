"""The rehearsal-free toolbox of "A Closer Look at Rehearsal-Free Continual Learning" (Smith, Tian, Halbe, Hsu &
Kira, CVPR-W 2023; specification in methods.md section 5), as one strategy with four switchable parts.

theta_{k-1} is the model frozen at the end of the previous experience; on the current batch x:

    L = CE + pred_kd * L_pred + feat_kd * L_feat + l2 * L_L2 + ewc * L_EWC
    L_pred = tau^2 KL( softmax(z_old(x)/tau) || softmax(z(x)_old classes / tau) )   (old classes only)
    L_feat = mean over the batch of || f(x) - f_{theta_{k-1}}(x) ||_2^2       (f: the input of the last linear layer)
    L_L2   = sum_i (theta_i - theta_{k-1,i})^2
    L_EWC  = sum_i F_i (theta_i - theta_{k-1,i})^2,  F: the per-sample empirical Fisher diagonal on the experience's
             training data, accumulated over experiences by sum or running average (`fisher_accumulate`)

All weights 0 is sequential fine-tuning, bit for bit. On task-aware streams the prediction distillation is taken
per old task's head (as LwF here); class-incremental streams distil one softmax over all classes seen before.

Deviations and omissions: the paper's `ce_scope` choice (CE over seen classes only) is not offered: the task
loss is the engine's cross-entropy over the whole head (the library's class-incremental setting); the
pretrained-ViT variant (regularise only the attention blocks) is not implemented; the Fisher is estimated on
`fisher_samples` random samples of the experience. The authors' learner code was not available to read
(methods.md: the sweeps of shaunak27/data-free-continual-learning were; lambda_L2 was swept in 1e-3..5e-1).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.lwf import distillation_loss, head_columns, old_heads
from lifelong.strategies.regularization import FISHER_SAMPLES, QuadraticAnchor


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The model's last nn.Linear module (the head whose input is the penultimate feature), if any."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The input of the model's last linear layer, and the model's output, for inputs x (one forward pass)."""
    head = last_linear(model)
    seen: list[Tensor] = []
    hook = head.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    try:
        logits = model(x)
    finally:
        hook.remove()
    return seen[-1], logits


@register
class RehearsalFree(QuadraticAnchor):
    name = "rehearsal-free"
    description = ("rehearsal-free toolbox (Smith et al. 2023): prediction and feature distillation, L2 and EWC "
                   "towards the previous model, each switchable")
    params = {
        "pred_kd": Param(1.0, "weight of prediction distillation (0: off)", low=0.0),
        "feat_kd": Param(0.0, "weight of feature distillation (0: off)", low=0.0),
        "l2": Param(0.0, "weight of the L2 pull to the previous parameters (0: off)", low=0.0),
        "ewc": Param(0.0, "weight of the EWC penalty (0: off)", low=0.0),
        "temperature": Param(2.0, "distillation temperature tau", low=0.0, low_open=True),
        "fisher_accumulate": Param("sum", "how EWC's Fisher accumulates over experiences",
                                   choices=("sum", "average")),
        "fisher_samples": FISHER_SAMPLES,
    }
    neutral = {"pred_kd": 0.0, "feat_kd": 0.0, "l2": 0.0, "ewc": 0.0}
    penalty_scale = 1.0

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.teacher: nn.Module | None = None
        self.fisher: dict[str, Tensor] = {}
        self.fishers_seen = 0
        self.heads: list[list[int]] = []
        self.seen: dict[int, list[int]] = {}

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if self.hp["feat_kd"] > 0 and last_linear(ctx.model) is None:
            raise LifelongError("rehearsal-free: feat_kd needs a model whose head is a linear layer (its input is "
                                "the distilled feature)")

    @property
    def strength(self) -> float:
        return 1.0 if self.hp["l2"] > 0 or self.hp["ewc"] > 0 else 0.0

    @property
    def distils(self) -> bool:
        return self.hp["pred_kd"] > 0 or self.hp["feat_kd"] > 0

    def begin_experience(self, exp: Experience) -> None:
        self.heads = old_heads(self.seen, self.ctx.stream.task_aware)

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        total = super().penalty(batch, out)
        if self.teacher is None or not self.distils:
            return total
        terms = [] if total is None else [total]
        x = batch.new.x
        with torch.no_grad():
            old_f, old_z = features_and_logits(self.teacher, x)
        if self.hp["feat_kd"] > 0:
            new_f, _ = features_and_logits(self.ctx.model, x)
            terms.append(self.hp["feat_kd"] * (new_f - old_f).pow(2).sum(1).mean())
        if self.hp["pred_kd"] > 0 and self.heads:
            z, tau = out["new"], self.hp["temperature"]
            kd = [distillation_loss(z[:, h], old_z[:, h], tau, t_squared=True) for h in head_columns(self.heads)]
            terms.append(self.hp["pred_kd"] * sum(kd[1:], kd[0]))
        return sum(terms[1:], terms[0]) if terms else None

    def end_experience(self, exp: Experience) -> None:
        task = exp.task_id if self.ctx.stream.task_aware else 0
        self.seen[task] = sorted(set(self.seen.get(task, [])) | set(exp.classes))
        if self.distils:
            self.teacher = self.frozen_copy()
        if self.strength == 0.0:
            return
        importance = {k: torch.full_like(v, self.hp["l2"]) for k, v in self.snapshot().items()}
        if self.hp["ewc"] > 0:
            new = self.importance(exp)
            n = self.fishers_seen
            if not self.fisher:
                self.fisher = new
            elif self.hp["fisher_accumulate"] == "sum":
                self.fisher = {k: self.fisher[k] + v for k, v in new.items()}
            else:
                self.fisher = {k: (n * self.fisher[k] + v) / (n + 1) for k, v in new.items()}
            self.fishers_seen = n + 1
            importance = {k: v + self.hp["ewc"] * self.fisher[k] for k, v in importance.items()}
        self.importances, self.anchors = [importance], [self.snapshot()]
        self.consolidate()

    def frozen_copy(self) -> nn.Module:
        teacher = copy.deepcopy(self.ctx.model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "fisher": self.fisher, "fishers_seen": self.fishers_seen, "heads": self.heads,
                "seen": {str(k): v for k, v in self.seen.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fisher, self.fishers_seen = state["fisher"], state["fishers_seen"]
        self.heads, self.seen = state["heads"], {int(k): v for k, v in state["seen"].items()}
        if state["teacher"] is not None:
            self.teacher = self.frozen_copy()
            self.teacher.load_state_dict(state["teacher"])
