"""Learning without Forgetting (Li & Hoiem 2016): distil the previous model's outputs on new data.

Loss on old classes: alpha * T^2 * KL(softmax(z_old / T) || softmax(z / T)), where z_old are the logits of the
model frozen at the end of the previous experience, restricted to the classes seen before this experience.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Strategy, register


def distillation_loss(logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(teacher || student) on temperature-softened distributions, averaged over the batch."""
    t = temperature
    log_p = F.log_softmax(logits / t, dim=1)
    q = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * t * t


@register
class LwF(Strategy):
    name = "lwf"
    description = "learning without forgetting: distil the previous model's old-class outputs"
    params = {
        "alpha": Param(1.0, "weight of the distillation term", low=0.0),
        "temperature": Param(2.0, "softmax temperature T", low=0.0, low_open=True),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.teacher: torch.nn.Module | None = None
        self.old_classes: list[int] = []
        self.seen: list[int] = []

    def begin_experience(self, exp: Experience) -> None:
        self.old_classes = list(self.seen)

    def penalty(self, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.teacher is None or not self.old_classes or self.hp["alpha"] == 0.0:
            return None
        with torch.no_grad():
            target = self.teacher(batch.x[: batch.n_new])[:, self.old_classes]
        student = logits[: batch.n_new, self.old_classes]
        return self.hp["alpha"] * distillation_loss(student, target, self.hp["temperature"])

    def end_experience(self, exp: Experience) -> None:
        self.seen = sorted(set(self.seen) | set(exp.classes))
        self.teacher = copy.deepcopy(self.ctx.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": None if self.teacher is None else self.teacher.state_dict(),
                "old_classes": self.old_classes, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.old_classes, self.seen = state["old_classes"], state["seen"]
        if state["teacher"] is not None:
            self.teacher = copy.deepcopy(self.ctx.model).eval()
            self.teacher.load_state_dict(state["teacher"])
            for p in self.teacher.parameters():
                p.requires_grad_(False)
