"""PRD, prototype-sample relation distillation (Asadi, Davari, Mudur, Aljundi, Belilovsky; ICML 2023,
"Prototype-Sample Relation Distillation: Towards Replay-Free Continual Learning"; specification: methods.md
section 14.1). Rehearsal-free: no sample of a past experience is kept.

    model: backbone h(x) (the user's model minus its head) -> projection z = normalise(g(h(x)));
           one learnable prototype p_c per class in the space of z
    each step, current batch x (two views: x and a random augmentation of it), labels y:
        L_SupCon = supervised contrastive loss over the 2B normalised projections (temperature t)
        L_proto  = CE over softmax_c(cos(z, p_c)/t_p) restricted to the current experience's classes
        L_PRD    = mean over old prototypes c of KL(q_c^old || q_c), q_c(i) = softmax_i(cos(p_c, z_i)/t_r),
                   q^old from the model and prototypes frozen at the end of the previous experience
        L = L_SupCon + L_proto + lambda L_PRD
    old prototypes get gradients only through L_PRD (L_proto never scores an old class)
    predict: argmax_c cos(z(x), p_c) over the classes seen so far

Deviations and choices:
- the paper body and the authors' code could not be read for this file (only the abstract and methods.md's
  recollection): the relation is taken, as the paper's name and abstract describe it, as each old prototype's
  similarity distribution over the *samples* of the batch; methods.md writes it per sample over the old
  prototypes. Both vanish at the start of an experience; `relation_distillation` in prototypes.py implements
  the per-prototype form;
- the projection head (two layers, width of the features -> `proj_dim`) and the prototypes live in a wrapper
  the strategy puts around the model at the first experience (`adapt_model`), so the optimizer trains them;
  the model's own linear head is not trained (PRD predicts with the prototypes);
- the second view is a random resized crop + horizontal flip (images) or Gaussian noise (vectors) drawn from a
  private checkpointed generator, not the paper's SimCLR colour augmentations (grey images here);
- the old-task teacher is a frozen copy of the whole wrapper taken at the end of each experience.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import penultimate
from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import NEW, Batch, Outputs, Segment, Strategy, register
from lifelong.strategies.prototypes import (
    EPS,
    FeatureTap,
    Prototyped,
    augment,
    generator_from,
    relation_distillation,
    supcon_loss,
    wrap,
)


@register
class PRD(Strategy):
    name = "prd"
    family = "prototype"
    composable = False
    description = "prototype-sample relation distillation: SupCon features, learnable prototypes, no replay"
    params = {
        "prd_lambda": Param(1.0, "weight of the relation distillation term", low=0.0),
        "temperature": Param(0.1, "temperature of the supervised contrastive loss", low=0.0, low_open=True),
        "proto_temperature": Param(0.1, "temperature of the prototype classifier", low=0.0, low_open=True),
        "relation_temperature": Param(0.1, "temperature of the prototype-sample relations", low=0.0,
                                      low_open=True),
        "proj_dim": Param(128, "width of the projection (and prototype) space", low=1),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.gen = generator_from(ctx.generator)
        self.tap = FeatureTap()
        self.teacher: Prototyped | None = None
        self.teacher_state: dict[str, Tensor] | None = None
        self.old: list[int] = []
        self.current: list[int] = []

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        model = wrap(model, self.gen, self.hp["proj_dim"], self.ctx.stream.num_classes, prototypes=True)
        self.tap.attach(model)
        return model

    def begin_experience(self, exp: Experience) -> None:
        self.current = sorted(exp.classes)

    def end_experience(self, exp: Experience) -> None:
        self.old = sorted(set(self.old) | set(exp.classes))
        self.teacher, self.teacher_state = copy.deepcopy(self.ctx.model).eval(), None
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def training_batch(self, batch: Batch) -> Batch:
        new = batch.new
        view = augment(new.x, self.ctx.stream[0].data.input_shape, self.gen)
        batch.add(f"{self.name}.view", Segment(view, new.y, task=new.task))
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        model: Prototyped = self.ctx.model  # type: ignore[assignment]
        self.tap.attach(model)
        rows = [NEW, f"{self.name}.view"]
        x = torch.cat([batch[n].x for n in rows])
        h = self.tap.features(model, out.rows(rows), x)
        z = F.normalize(model.proj(h), dim=1, eps=EPS)
        y = torch.cat([batch[n].y for n in rows])
        loss = supcon_loss(z, y, self.hp["temperature"])
        current = self.current or sorted(set(y.tolist()))
        cols = torch.as_tensor(current, device=z.device)
        protos = F.normalize(model.prototypes, dim=1, eps=EPS)  # type: ignore[arg-type]
        logits = z @ protos[cols].t() / self.hp["proto_temperature"]
        target = torch.searchsorted(cols, y)
        loss = loss + F.cross_entropy(logits, target)
        old = [c for c in self.old if c not in current]
        teacher = self.frozen()
        if teacher is not None and old and self.hp["prd_lambda"] > 0:
            with torch.no_grad():
                z_old = teacher.proj(penultimate(teacher.base, x))
            idx = torch.as_tensor(old, device=z.device)
            loss = loss + self.hp["prd_lambda"] * relation_distillation(
                z, model.prototypes[idx], z_old, teacher.prototypes[idx],  # type: ignore[index]
                self.hp["relation_temperature"])
        return loss

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.tap.clear()

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        if not isinstance(model, Prototyped):
            return model(x)
        z = F.normalize(model.proj(penultimate(model.base, x)), dim=1, eps=EPS)
        scores = z @ F.normalize(model.prototypes, dim=1, eps=EPS).t()  # type: ignore[arg-type]
        seen = sorted(set(self.old) | set(self.current))
        if seen:
            mask = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
            mask[seen] = False
            scores = scores.masked_fill(mask, float("-inf"))
        return scores

    def frozen(self) -> Prototyped | None:
        """The teacher, rebuilt from a loaded state on first use (a state may load before the model is wrapped)."""
        if self.teacher is None and self.teacher_state is not None and isinstance(self.ctx.model, Prototyped):
            self.teacher = copy.deepcopy(self.ctx.model).eval()
            self.teacher.load_state_dict(self.teacher_state)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.teacher_state = None
        return self.teacher

    def state_dict(self) -> dict[str, Any]:
        teacher = self.teacher.state_dict() if self.teacher is not None else self.teacher_state
        return {"gen": self.gen.get_state(), "old": list(self.old), "current": list(self.current),
                "teacher": teacher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.old, self.current = list(state["old"]), list(state["current"])
        self.teacher, self.teacher_state = None, state["teacher"]
