"""The rehearsal-free toolbox of "A Closer Look at Rehearsal-Free Continual Learning" (Smith, Tian, Halbe, Hsu &
Kira, CVPR-W 2023; specification in methods.md section 5), as one strategy with four switchable parts, after the
authors' learners (shaunak27/data-free-continual-learning learners/kd.py: `LWF_MC`, `LWF_MC_FEATKD`, `EWC_MC`;
the same `LWF_MC` in GT-RIPL/AlwaysBeDreaming-DFCIL).

theta_{k-1} is the model frozen at the end of the previous experience; on the current batch x, with S the
classes seen so far (the current experience's included) and O the old ones:

    pred_kd_form=lwf-mc (the authors', default): the task loss itself is LwF.MC, replacing the cross-entropy:
        L = mean over the batch and the columns S of w_c BCE(sigmoid(z(x)_c), t_c),
        t = one-hot of the label on S, t_c = sigmoid(z_old(x)_c) for c in O; w_c = pred_kd for c in O, else 1
        (pred_kd = 1: exactly the authors'; no temperature). Prediction is among S, as the authors' model,
        whose outputs are the seen classes only (the columns of unseen classes are never trained by the BCE).
    pred_kd_form=kl (methods.md's form): L = CE + pred_kd * tau^2 KL(softmax(z_old/tau) || softmax(z_O/tau))
    + feat_kd * L_feat + l2 * L_L2 + ewc * L_EWC, where
    L_feat = mean over the batch and the features of (f(x) - f_{theta_{k-1}}(x))^2 (f: the input of the last
             linear layer; the authors' MSELoss(reduction='none')(...).mean())
    L_L2   = sum_i (theta_i - theta_{k-1,i})^2
    L_EWC  = sum_i F_i (theta_i - theta_{k-1,i})^2,  F: the per-sample empirical Fisher diagonal on the experience's
             training data, accumulated over experiences by sum or running average (`fisher_accumulate`)
    with i over the backbone's parameters only (the authors regularise `model.feat`, not the head).

All weights 0 is sequential fine-tuning, bit for bit. On task-aware streams the kl form distils per old task's
head (as LwF here).

Changed 2026-12-02 after an audit found the authors' code (before: the kl form only, a feature MSE summed over
features, L2 and EWC on the head too): class-incremental split-fashion-mnist went from naive's 20.0 / 19.9 %
(seeds 0 / 1) to 30.0 / 33.1 % with the authors' LwF.MC (docs/zoo/rehearsal-free.md).
Deviations and omissions: the authors' Fisher is squared minibatch gradients of the sigmoid loss on the
finished task's outputs; here the per-sample empirical Fisher of the cross-entropy on `fisher_samples` samples;
with L2 the authors also pull towards the initial weights during the first task (not here); the
pretrained-ViT variant (regularise only the attention blocks) is not implemented.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
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
        "pred_kd_form": Param("lwf-mc", "prediction distillation: lwf-mc (the authors': sigmoid BCE over the seen "
                              "classes with the previous model's outputs as old-class targets, in place of the "
                              "cross-entropy) or kl (tau^2 KL added to the cross-entropy, methods.md)",
                              choices=("lwf-mc", "kl")),
        "temperature": Param(2.0, "distillation temperature tau of pred_kd_form=kl", low=0.0, low_open=True,
                             tuned=False),
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
        self.current: list[int] = []
        if self.hp["pred_kd_form"] == "lwf-mc" and self.hp["temperature"] != self.params["temperature"].default:
            raise LifelongError("rehearsal-free: temperature applies to pred_kd_form=kl only (LwF.MC has none)")

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if (self.hp["feat_kd"] > 0 or self.strength > 0) and last_linear(ctx.model) is None:
            raise LifelongError("rehearsal-free: feat_kd, l2 and ewc need a model whose head is a linear layer (its "
                                "input is the distilled feature; the penalties cover the layers before it)")

    @property
    def multiclass(self) -> bool:
        """Whether the task loss is the authors' LwF.MC (in place of the engine's cross-entropy)."""
        return self.hp["pred_kd"] > 0 and self.hp["pred_kd_form"] == "lwf-mc"

    def seen_classes(self) -> list[int]:
        return sorted({c for cs in self.seen.values() for c in cs} | set(self.current))

    def loss(self, batch: Batch, out: Outputs) -> Tensor | None:
        if not self.multiclass:
            return None
        cols = torch.tensor(self.seen_classes(), device=out["new"].device)
        z = out["new"][:, cols]
        target = (batch.new.y.unsqueeze(1) == cols).to(z.dtype)
        weight = torch.ones_like(z[0])
        if self.teacher is not None:
            old = torch.tensor(sorted({c for cs in self.seen.values() for c in cs}), device=z.device)
            is_old = torch.isin(cols, old)
            with torch.no_grad():
                target[:, is_old] = torch.sigmoid(self.ctx.forward(batch.new.x, self.teacher)[:, cols[is_old]])
            weight[is_old] = self.hp["pred_kd"]
        return F.binary_cross_entropy_with_logits(z, target, weight=weight.expand_as(z))

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        scores = model(x)
        if not self.multiclass or not self.current:
            return scores
        unseen = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
        unseen[self.seen_classes()] = False
        return scores.masked_fill(unseen, float("-inf"))

    @property
    def strength(self) -> float:
        return 1.0 if self.hp["l2"] > 0 or self.hp["ewc"] > 0 else 0.0

    @property
    def distils(self) -> bool:
        return self.hp["pred_kd"] > 0 or self.hp["feat_kd"] > 0

    def begin_experience(self, exp: Experience) -> None:
        self.heads = old_heads(self.seen, self.ctx.stream.task_aware)
        self.current = sorted(exp.classes)

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
            terms.append(self.hp["feat_kd"] * (new_f - old_f).pow(2).mean())
        if self.hp["pred_kd"] > 0 and self.heads and not self.multiclass:
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
        head = {id(p) for p in last_linear(self.ctx.model).parameters()}  # the authors regularise model.feat only
        for name, p in self.ctx.model.named_parameters():
            if id(p) in head:
                importance[name] = torch.zeros_like(importance[name])
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
                "seen": {str(k): v for k, v in self.seen.items()}, "current": list(self.current)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fisher, self.fishers_seen = state["fisher"], state["fishers_seen"]
        self.heads, self.seen = state["heads"], {int(k): v for k, v in state["seen"].items()}
        self.current = list(state.get("current", []))
        if state["teacher"] is not None:
            self.teacher = self.frozen_copy()
            self.teacher.load_state_dict(state["teacher"])
