"""Learning without Forgetting (Li & Hoiem 2016): distil the previous model's outputs on new data.

Loss on old classes: alpha * KL(softmax(z_old / T) || softmax(z / T)), where z_old are the logits of the model
frozen at the end of the previous experience. Class-incremental streams distil one softmax over all classes seen
before the experience; task-aware streams distil each old task's head on its own and sum the terms, as the paper
(one loss per old task) and Avalanche's plugin do. The KL differs from the paper's soft cross-entropy by the
teacher's entropy, a constant: same gradients. `t_squared` multiplies by T^2 (Hinton et al.'s gradient scaling;
off by default as in the paper and Avalanche: with it, alpha=1 at T=2 is four times stronger).
Deviations: distillation covers the new data only, also when LwF is composed with replay; there is no warm-up
(the paper, and Mammoth's begin_task, first train the new head alone on frozen features for some epochs); the
cross-entropy covers the whole head (Mammoth's the classes seen so far).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, Strategy, register


def distillation_loss(logits: Tensor, teacher_logits: Tensor, temperature: float, t_squared: bool = False) -> Tensor:
    """KL(teacher || student) on temperature-softened distributions, averaged over the batch (times T^2 if asked)."""
    t = temperature
    log_p = F.log_softmax(logits / t, dim=1)
    q = F.softmax(teacher_logits / t, dim=1)
    loss = F.kl_div(log_p, q, reduction="batchmean")
    return loss * t * t if t_squared else loss


def old_heads(seen: dict[int, list[int]], task_aware: bool) -> list[list[int]]:
    """The class groups distilled separately: one per old task (task-aware streams), else all old classes."""
    if task_aware:
        return [classes for _, classes in sorted(seen.items())]
    old = sorted(c for classes in seen.values() for c in classes)
    return [old] if old else []


def head_columns(heads: list[list[int]]) -> list[slice | list[int]]:
    """Each head's logit columns as an index: a slice (a view, no gather) when its classes are consecutive, as
    they are on streams that keep the dataset's class order; the list of classes otherwise."""
    return [slice(h[0], h[-1] + 1) if h == list(range(h[0], h[-1] + 1)) else h for h in heads]


@register
class LwF(Strategy):
    name = "lwf"
    family = "regularisation"
    description = "learning without forgetting: distil the previous model's old-class outputs"
    params = {
        "alpha": Param(1.0, "weight of the distillation term", low=0.0),
        "temperature": Param(2.0, "softmax temperature T", low=0.0, low_open=True),
        "t_squared": Param(False, "multiply the distillation term by T^2 (off in the paper and Avalanche)"),
    }
    neutral = {"alpha": 0.0}

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.teacher: torch.nn.Module | None = None
        self.heads: list[list[int]] = []  # class groups distilled separately (one per old task, or one)
        self.seen: dict[int, list[int]] = {}  # task id -> classes seen so far

    def begin_experience(self, exp: Experience) -> None:
        self.heads = old_heads(self.seen, self.ctx.stream.task_aware)

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        if self.teacher is None or not self.heads or self.hp["alpha"] == 0.0:
            return None
        with torch.no_grad():
            target = self.ctx.forward(batch.new.x, self.teacher)
        student = out["new"]
        T, sq = self.hp["temperature"], self.hp["t_squared"]
        terms = [distillation_loss(student[:, h], target[:, h], T, sq) for h in head_columns(self.heads)]
        return self.hp["alpha"] * sum(terms[1:], terms[0])

    def end_experience(self, exp: Experience) -> None:
        task = exp.task_id if self.ctx.stream.task_aware else 0
        self.seen[task] = sorted(set(self.seen.get(task, [])) | set(exp.classes))
        self.teacher = self.frozen_copy()

    def frozen_copy(self) -> torch.nn.Module:
        teacher = copy.deepcopy(self.ctx.model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": None if self.teacher is None else self.teacher.state_dict(), "heads": self.heads,
                "seen": {str(k): v for k, v in self.seen.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.heads, self.seen = state["heads"], {int(k): v for k, v in state["seen"].items()}
        if state["teacher"] is not None:
            self.teacher = self.frozen_copy()
            self.teacher.load_state_dict(state["teacher"])
