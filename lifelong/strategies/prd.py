"""PRD, prototype-sample relation distillation (Asadi, Davari, Mudur, Aljundi, Belilovsky; ICML 2023,
"Prototype-Sample Relation Distillation: Towards Replay-Free Continual Learning"; specification: methods.md
section 14.1). Rehearsal-free: no sample of a past experience is kept. Follows the authors' pre-release code
(github.com/naderAsadi/Probing-Continual-Learning, `methods/repe.py`, class `RePE`; its README gives the
hyperparameters of the paper's Figure 2).

    model: backbone h(x) (the user's model minus its head); projection z = normalise(g(h(x))) for SupCon;
           one learnable prototype p_c per class in the space of the backbone features h
    each step, current batch x (two views: x and a random augmentation of it), labels y:
        L_SupCon = supervised contrastive loss over the 2B normalised projections (temperature t)
        L_proto  = mean_i (1 - cos(stopgrad(h_i), p_{y_i}))   (prototypes of the current classes only;
                   the features are detached: the prototypes follow the backbone, they do not shape it)
        L_PRD    = sum over old experiences e of mean_i CE(q_e^old(i), q_e(i)),
                   q_e(i) = softmax_{c in e}(<h_i, p_c> / ||p_c|| / T)  (per sample, over the prototypes of
                   experience e; the features are not normalised), q^old from the backbone and prototypes
                   frozen at the end of the previous experience
        L = L_SupCon + proto_weight L_proto + lambda L_PRD
    old prototypes get gradients only through L_PRD
    predict: argmax_c cos(h(x), p_c) over the classes seen so far

Defaults are the authors' (README, Split-CIFAR100 / Split-MiniImageNet): lambda = distill_coef 4,
proto_weight = prototypes_coef 2, SupCon temperature 0.1, distill_temp 1, projection 128.

Deviations and choices:
- the authors' optimizer gives the prototypes their own rate (prototypes_lr 0.01) without momentum; here one
  optimizer (the run's) trains everything;
- the authors' SupConLoss scales by temperature / base_temperature (0.1 / 0.07); `supcon_loss` does not;
- the authors warm up for 120 epochs on the first task and train 100 epochs per task; here the run's schedule
  (one epoch by default) applies;
- the projection head (two layers, width of the features -> `proj_dim`) and the prototypes live in a wrapper
  the strategy puts around the model at the first experience (`adapt_model`), so the optimizer trains them;
  the model's own linear head is not trained (PRD predicts with the prototypes);
- the second view is a random resized crop + horizontal flip (images) or Gaussian noise (vectors) drawn from a
  private checkpointed generator; the authors use two SimCLR-augmented views (colour jitter on grey images
  does nothing), here the first view is the unaugmented batch;
- the old-experience teacher is a frozen copy of the whole wrapper taken at the end of each experience, in eval
  mode (the authors' stays in train mode: only matters with BatchNorm); class-incremental prediction is among the
  seen classes (the authors score every prototype).
"""

from __future__ import annotations

import copy
import math
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
    feature_dim,
    generator_from,
    supcon_loss,
)


def prototype_scores(h: Tensor, prototypes: Tensor) -> Tensor:
    """<h_i, p_c> / ||p_c||: the authors' relation scores (prototypes normalised, features not)."""
    return h @ F.normalize(prototypes, dim=1, eps=EPS).t()


def prototype_loss(h: Tensor, prototypes: Tensor, y: Tensor) -> Tensor:
    """mean_i (1 - cos(stopgrad(h_i), p_{y_i})): pulls each labelled prototype towards its (detached) features."""
    return (1 - F.cosine_similarity(h.detach(), prototypes[y], dim=1, eps=EPS)).mean()


def relation_loss(h: Tensor, prototypes: Tensor, h_old: Tensor, prototypes_old: Tensor,
                  groups: list[list[int]], temperature: float) -> Tensor:
    """PRD's relation distillation: for each old experience's classes C, the per-sample distribution over C of
    the prototype scores, from the frozen model (teacher) and the current one (student); the soft cross-entropy
    mean_i -sum_c q_old log q_new, summed over the experiences."""
    loss = h.sum() * 0.0
    for classes in groups:
        idx = torch.as_tensor(classes, device=h.device)
        log_q = F.log_softmax(prototype_scores(h, prototypes[idx]) / temperature, dim=1)
        q_old = F.softmax(prototype_scores(h_old, prototypes_old[idx]) / temperature, dim=1)
        loss = loss - (q_old * log_q).sum(1).mean()
    return loss


@register
class PRD(Strategy):
    name = "prd"
    family = "prototype"
    composable = False
    description = "prototype-sample relation distillation: SupCon features, learnable prototypes, no replay"
    params = {
        "prd_lambda": Param(4.0, "weight of the relation distillation term (authors' distill_coef)", low=0.0),
        "proto_weight": Param(2.0, "weight of the prototype loss (authors' prototypes_coef)", low=0.0),
        "temperature": Param(0.1, "temperature of the supervised contrastive loss", low=0.0, low_open=True),
        "relation_temperature": Param(1.0, "temperature of the prototype-sample relations (authors' "
                                      "distill_temp)", low=0.0, low_open=True),
        "proj_dim": Param(128, "width of the projection space of the contrastive loss", low=1),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.gen = generator_from(ctx.generator)
        self.tap = FeatureTap()
        self.teacher: Prototyped | None = None
        self.teacher_state: dict[str, Tensor] | None = None
        self.groups: list[list[int]] = []
        self.current: list[int] = []

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        if not isinstance(model, Prototyped):
            init = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=self.gen)))
            dim = feature_dim(model)
            model = Prototyped(model, dim, self.hp["proj_dim"], self.ctx.stream.num_classes, init, prototypes=False)
            bound = 1.0 / math.sqrt(dim)
            model.prototypes = nn.Parameter(
                (torch.rand(self.ctx.stream.num_classes, dim, generator=init) * 2 - 1) * bound)
        self.tap.attach(model)
        return model

    @property
    def old(self) -> list[int]:
        """The classes of the finished experiences."""
        return sorted({c for g in self.groups for c in g})

    def begin_experience(self, exp: Experience) -> None:
        self.current = sorted(exp.classes)

    def end_experience(self, exp: Experience) -> None:
        self.groups.append(sorted(exp.classes))
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
        protos: Tensor = model.prototypes  # type: ignore[assignment]
        loss = supcon_loss(z, y, self.hp["temperature"])
        loss = loss + self.hp["proto_weight"] * prototype_loss(h, protos, y)
        current = set(self.current or y.tolist())
        groups = [g for g in self.groups if not current & set(g)]
        teacher = self.frozen()
        if teacher is not None and groups and self.hp["prd_lambda"] > 0:
            with torch.no_grad():
                h_old = penultimate(teacher.base, x)
            loss = loss + self.hp["prd_lambda"] * relation_loss(
                h, protos, h_old, teacher.prototypes, groups,  # type: ignore[arg-type]
                self.hp["relation_temperature"])
        return loss

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.tap.clear()

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        if not isinstance(model, Prototyped):
            return model(x)
        h = F.normalize(penultimate(model.base, x), dim=1, eps=EPS)
        scores = h @ F.normalize(model.prototypes, dim=1, eps=EPS).t()  # type: ignore[arg-type]
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
        return {"gen": self.gen.get_state(), "groups": [list(g) for g in self.groups],
                "current": list(self.current), "teacher": teacher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.groups = [list(g) for g in state["groups"]]
        self.current = list(state["current"])
        self.teacher, self.teacher_state = None, state["teacher"]
