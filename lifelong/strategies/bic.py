"""BiC (Wu et al. 2019): large-scale incremental learning with a bias correction layer.

    memory: exemplars (herding), 500 in all, each class's exemplars split train : validation = 9 : 1
    stage 1 (each step, new batch + exemplars of the training part; n old classes, m new classes):
        lambda = n / (n + m)
        L_d = sum_{k <= n} -pi_hat_k(x) log pi_k(x),  pi = softmax over the old classes at T = 2,
              pi_hat from the model frozen at the last experience's end, with its bias correction applied
        L_c = CE over the n + m seen classes
        loss = lambda * L_d + (1 - lambda) * L_c
    stage 2 (end of every experience after the first; the model frozen):
        q_k = o_k for old classes, alpha * o_k + beta for the new ones (alpha = 1, beta = 0 at first)
        alpha, beta minimise the CE of q on the validation set: the held-out exemplars of the old classes and
        as many samples of each new class
    predict: q over the seen classes (the correction of the latest experience only, as in the paper)

Authors' code read through Mammoth's port (models/bic.py, "based on sairin1202/BIC"): Adam at lr 1e-3 for
`bias_epochs` = 250 epochs of mini-batches over the validation set, distillation from the bias-corrected old
model, correction dropped when the next experience begins. Mammoth multiplies L_d by T^2; the paper does not,
and neither does this file.

Deviations: the engine trains on every sample of the experience, so the new classes' validation samples are
drawn at random from the experience's training data (the paper holds them out of stage 1); only the old
classes' validation exemplars are unseen by stage 1. The validation exemplars of an old class are the last
tenth (at least one) of its herding order, re-split each time the memory shrinks. Replay draws
`replay_batch_size` training exemplars per step instead of mixing them into the epoch. The authors' own code
(wuyuebupt/LargeScaleIncrementalLearning resnet.py) also puts 0.1 * l2_loss on the bias parameters and trains
them with momentum SGD on a step schedule (adding the L2 term changed 81.1 -> 81.3 and 81.3 -> 81.2 on two
seeds: not taken).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.minibatch import descend
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.exemplars import EXEMPLAR_PARAMS, ExemplarStrategy


class BiasCorrection(nn.Module):
    """alpha * o + beta on the logits of `classes` (the new ones); every other logit untouched.
    Identity at initialisation (alpha = 1, beta = 0)."""

    def __init__(self, classes: list[int]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))
        self._cols: Tensor | None = None  # `classes` as an index tensor, built on first use on the logits' device

    def forward(self, logits: Tensor) -> Tensor:
        if not self.classes:
            return logits
        cols = self._cols
        if cols is None or cols.device != logits.device:
            cols = self._cols = torch.as_tensor(self.classes, device=logits.device)
        return logits.index_copy(1, cols, self.alpha * logits[:, cols] + self.beta)


@register
class BiC(ExemplarStrategy):
    name = "bic"
    description = "BiC: herding exemplars, distillation, and a 2-parameter bias correction of the new classes"
    params = {
        **EXEMPLAR_PARAMS,
        "temperature": Param(2.0, "distillation temperature T", low=0.0, low_open=True),
        "val_fraction": Param(0.1, "share of each old class's exemplars held out for the bias correction",
                              low=0.0, high=1.0, low_open=True),
        "bias_epochs": Param(250, "epochs of the bias-correction stage over the validation set", low=0),
        "bias_lr": Param(0.001, "Adam learning rate of the bias-correction stage", low=0.0, low_open=True),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.correction = BiasCorrection([])  # applied at prediction (latest experience's new classes)
        self.teacher_correction = BiasCorrection([])  # applied to the teacher's logits

    # --- memory split -----------------------------------------------------------------------------------
    def validation_rows(self) -> Tensor:
        """Memory rows held out: the last `ceil(val_fraction * m_c)` of each class's herding order."""
        y, rank = self.memory.y, self.memory.rank
        if len(y) == 0:
            return torch.zeros(0, dtype=torch.long)
        counts = torch.bincount(y, minlength=int(y.max()) + 1)[y]
        held = torch.clamp(torch.ceil(counts * self.hp["val_fraction"]).long(), min=1)
        held = torch.where(counts > 1, held, torch.zeros_like(held))  # a lone exemplar stays for training
        return torch.nonzero(rank >= counts - held).flatten()

    def replay_rows(self) -> Tensor | None:
        if len(self.memory) == 0:
            return None
        val = torch.zeros(len(self.memory), dtype=torch.bool, device=self.memory.y.device)
        val[self.validation_rows().to(val.device)] = True
        train = torch.nonzero(~val).flatten()
        return self.memory.draw(self.hp["replay_batch_size"], train) if len(train) else None

    # --- stage 1 --------------------------------------------------------------------------------------
    def begin_experience(self, exp: Experience) -> None:
        super().begin_experience(exp)
        self.teacher_correction = self.correction
        self.correction = BiasCorrection([])

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        names, logits, y = self.rows(batch, out)
        seen, old = self.seen, self.old
        ce = F.cross_entropy(logits.masked_fill(~self.class_mask(seen, logits.device), float("-inf")), y)
        if self.teacher is None or not old:
            return ce
        lam = len(old) / len(seen)
        with torch.no_grad():
            target = self.teacher_correction(self.ctx.forward(torch.cat([batch[n].x for n in names]),
                                                                     self.teacher))
        t = self.hp["temperature"]
        cols = torch.as_tensor(old, device=logits.device)
        distill = -(F.softmax(target[:, cols] / t, 1) * F.log_softmax(logits[:, cols] / t, 1)).sum(1).mean()
        return lam * distill + (1 - lam) * ce

    # --- stage 2 --------------------------------------------------------------------------------------
    @torch.no_grad()
    def validation_set(self, exp: Experience) -> tuple[Tensor, Tensor]:
        """Held-out old exemplars and as many random training samples of each new class (inputs, labels)."""
        rows = self.validation_rows().to(self.memory.y.device)
        raw, y = self.memory.raw[rows], self.memory.y[rows]
        per_class = max(1, math.ceil(len(rows) / max(1, len(self.old))))
        labels = exp.labels(exp.train_idx)
        parts_x, parts_y = [raw], [y]
        for c in self.current:
            idx = exp.train_idx[labels == c]
            pick = torch.tensor(self.memory.rng.sample(range(len(idx)), min(per_class, len(idx))), dtype=torch.long)
            chosen = idx[pick.to(idx.device)]
            parts_x.append(exp.raw(chosen))
            parts_y.append(exp.labels(chosen).to(y.device))
        return torch.cat(parts_x), torch.cat(parts_y)

    def fit_correction(self, logits: Tensor, y: Tensor) -> None:
        """Stage 2 on precomputed logits of the frozen model: Adam on (alpha, beta), mini-batches of the
        engine's batch size, `bias_epochs` epochs, CE over the seen classes. torch's Adam arithmetic (the
        single-tensor step) without its compile hooks, whose first use imports torch._dynamo (~0.5 s of a run)."""
        from lifelong.training.learner import Adam  # here: the learner imports the strategies

        corr = BiasCorrection(self.current).to(logits.device)
        opt = Adam(corr.parameters(), lr=self.hp["bias_lr"], foreach=False)
        mask = self.class_mask(self.seen, logits.device)
        logits = logits.masked_fill(~mask, float("-inf"))

        def loss_of(rows: Tensor) -> Tensor:
            return F.cross_entropy(corr(logits[rows]), y[rows])

        def epochs() -> Iterator[tuple[Tensor, Callable[[Tensor], Tensor]]]:
            for _ in range(self.hp["bias_epochs"]):
                yield torch.tensor(self.memory.rng.sample(range(len(y)), len(y)), dtype=torch.long,
                                   device=y.device), loss_of

        descend(opt, epochs(), self.ctx.batch_size)  # stage 2 fits (alpha, beta): the engine's model stays put
        self.correction = corr.requires_grad_(False)

    def end_experience(self, exp: Experience) -> None:
        if self.old and self.current and self.hp["bias_epochs"] > 0:
            raw, y = self.validation_set(exp)
            model = self.ctx.model
            was = model.training
            model.eval()
            with torch.no_grad():
                logits = model(self.ctx.prepare(raw)).float()
            model.train(was)
            self.fit_correction(logits, y.to(logits.device))
        super().end_experience(exp)
        self.teacher_correction = self.correction

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return self.mask_unseen(self.correction(model(x)))

    # --- resume ---------------------------------------------------------------------------------------
    @staticmethod
    def pack(c: BiasCorrection) -> dict[str, Any]:
        return {"classes": c.classes, "alpha": c.alpha.detach().clone(), "beta": c.beta.detach().clone()}

    @staticmethod
    def unpack(state: dict[str, Any]) -> BiasCorrection:
        c = BiasCorrection(list(state["classes"]))
        with torch.no_grad():
            c.alpha.copy_(state["alpha"])
            c.beta.copy_(state["beta"])
        return c.requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "correction": self.pack(self.correction),
                "teacher_correction": self.pack(self.teacher_correction)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.correction = self.unpack(state["correction"])
        self.teacher_correction = self.unpack(state["teacher_correction"])
