"""Analytic (closed-form) learners as strategies: NMC, ACIL, G-ACIL and DS-AL on a frozen feature extractor.

The run's model is the feature extractor. The first `base_experiences` experiences are trained by the engine's
SGD steps (the base phase; 0: the backbone stays at its initialisation, a random feature map). After the base
phase the backbone is frozen and every later experience is learned in closed form by `fit_experience`: the
features of its training samples (the model minus its last Linear layer, or the flattened inputs with
`features=input`) are computed in chunks, in eval mode and without gradients, and absorbed by the analytic
learner (DS-AL: one phase per experience). When the backbone is frozen, the base experiences' data is absorbed
too, as one phase: ACIL's re-alignment step, which fits the analytic classifier on the base training data with
the frozen backbone (Zhuang et al. 2022, Sec. 3.2; the authors' code runs it on the base training set before
the incremental phases).

Prediction: the analytic learner's scores on the features once it holds a class (columns of classes not
learned: -inf), else the model's own output (during the base phase). At the end of every experience after the
base phase the learner is stored as the run artifact `model_v1` (the format of `lifelong.analytic.store`, with
the frozen backbone's weights), so `lifelong unlearn RUN --classes ...` works on the run directory: it rebuilds
the stream from the run's config and recomputes the features it needs. Ledger ids are the samples' dataset
indices (see `lifelong.analytic.features.sample_ids`).

`slca` (slow learner + classifier alignment) trains on every experience by the engine's SGD steps; see `SLCA`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lifelong.analytic import ANALYTIC, AnalyticModel
from lifelong.analytic.features import FEATURE_SOURCES, experience_features, last_linear, model_features
from lifelong.analytic.slca import SLCA_PARAMS, ClassAlignment
from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, Strategy, register

FEATURE_PARAMS = {
    "base_experiences": Param(0, "first experiences trained by SGD before the backbone is frozen (0: the "
                              "backbone stays at its random initialisation)", low=0),
    "features": Param("backbone", "what the analytic learner sees: backbone (the model minus its last Linear "
                      "layer) or input (the flattened inputs)", choices=FEATURE_SOURCES),
}
ARTIFACT = "model_v1"  # version 1 of `lifelong.analytic.store`: what training produced; unlearning adds versions


def pad_scores(scores: Tensor, num_classes: int) -> Tensor:
    """Scores with -inf columns appended up to `num_classes` (classes the learner has never seen)."""
    if scores.shape[1] >= num_classes:
        return scores[:, :num_classes]
    return torch.cat([scores, scores.new_full((scores.shape[0], num_classes - scores.shape[1]), float("-inf"))], 1)


def declared(kind: str) -> dict[str, Param]:
    """A strategy's hyperparameters: the feature settings and the analytic learner's own declarations."""
    return {**FEATURE_PARAMS, **ANALYTIC.get(kind).PARAMS}


class AnalyticStrategy(Strategy):
    """A closed-form learner of `lifelong.analytic` (by its registry name `kind`) on the model's features."""

    kind: ClassVar[str] = ""
    family = "analytic"

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.learner: AnalyticModel | None = None
        self.frozen = False

    def learner_params(self) -> dict[str, Any]:
        return {k: self.hp[k] for k in ANALYTIC.get(self.kind).PARAMS}

    def setup(self, ctx) -> None:
        super().setup(ctx)
        n = len(ctx.stream)
        if self.hp["base_experiences"] > n:
            raise LifelongError(f"base_experiences={self.hp['base_experiences']} is more than the stream's "
                                f"{n} experiences")

    def learns_by_sgd(self, exp: Experience) -> bool:
        return exp.index < self.hp["base_experiences"]

    # --- learning --------------------------------------------------------------------------------------
    def features_of(self, exp: Experience) -> tuple[Tensor, Tensor, list]:
        ctx = self.ctx
        return experience_features(ctx.model, ctx.stream, exp, ctx.prepare, self.hp["features"])

    def absorb(self, experiences: list[Experience]) -> None:
        """Learn the training data of `experiences` as one phase."""
        parts = [self.features_of(e) for e in experiences]
        if self.learner is None:
            dim = next((f.shape[1] for f, _, _ in parts if f.numel()), None)
            if dim is None:
                return
            self.learner = ANALYTIC.get(self.kind)(dim, **self.learner_params())
        self.learner.begin_phase()
        for f, y, ids in parts:
            self.learner.fit_increment(f, y, ids)
        self.learner.end_phase()

    def freeze(self) -> None:
        """End of the base phase: from now on the backbone only computes features; absorb the base data."""
        self.frozen = True
        self.absorb([e for e in self.ctx.stream if e.index < self.hp["base_experiences"]])

    def fit_experience(self, exp: Experience) -> None:
        if not self.frozen:
            self.freeze()
        self.absorb([exp])

    def end_experience(self, exp: Experience) -> None:
        if not self.frozen and exp.index == self.hp["base_experiences"] - 1:
            self.freeze()
        if self.frozen and self.learner is not None:
            self.save_model(exp)

    def save_model(self, exp: Experience) -> None:
        """The learner as version 1 of the run's analytic models (read by `lifelong unlearn`)."""
        from lifelong.analytic.store import model_payload

        backbone = {k: v.detach().cpu() for k, v in self.ctx.model.state_dict().items()}
        meta = {"source": "strategy", "strategy": self.name, "after_experience": exp.index,
                "features": self.hp["features"], "base_experiences": self.hp["base_experiences"]}
        self.ctx.save_artifact(ARTIFACT, model_payload(self.learner, meta, 1, backbone=backbone))

    # --- evaluation ------------------------------------------------------------------------------------
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.learner is None or not self.learner.classes_:
            return model(x)
        scores = self.learner.decision_function(model_features(model, x, self.hp["features"]).cpu())
        return pad_scores(scores, self.ctx.stream.num_classes).to(x.device)

    # --- resume ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "learner": None if self.learner is None else self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frozen = bool(state["frozen"])
        learner = state["learner"]
        self.learner = None if learner is None else ANALYTIC.get(self.kind).from_state_dict(learner)


@register
class NMCStrategy(AnalyticStrategy):
    name = "nmc"
    kind = "nmc"
    description = "nearest class mean on frozen features (closed form, no SGD after the base phase)"
    params = declared("nmc")


@register
class ACILStrategy(AnalyticStrategy):
    name = "acil"
    kind = "acil"
    description = "analytic class-incremental learning: ridge on a random ReLU buffer of frozen features"
    params = declared("acil")


@register
class GACILStrategy(AnalyticStrategy):
    name = "g-acil"
    kind = "g-acil"
    description = "generalised ACIL (classes may recur, phases mix old and new classes); same solution as ACIL"
    params = declared("g-acil")


@register
class DSALStrategy(AnalyticStrategy):
    name = "ds-al"
    kind = "ds-al"
    description = "dual-stream analytic learning: ACIL plus a compensation stream, one phase per experience"
    params = declared("ds-al")


@register
class SLCA(Strategy):
    """SLCA (Zhang et al., ICCV 2023): slow learner + classifier alignment, on the engine's SGD steps.

    Slow learner: every experience is trained by the engine's steps with cross-entropy over the experience's
    classes only (`loss`); the backbone (every parameter but the last Linear layer's) moves at the learning rate
    times `bcb_lrscale`: `before_step` keeps the backbone's weights and `after_step` scales the optimizer's
    update of them by `bcb_lrscale`, which is exactly a backbone learning rate of lr * bcb_lrscale for SGD (with
    momentum and weight decay), Adam and AdamW (their updates are proportional to the rate); not for the
    schedule-free optimizers. bcb_lrscale=0 keeps the backbone's weights bit-identical (BatchNorm statistics
    still move in train mode, unlike the authors' frozen eval-mode backbone).
    Classifier alignment (`end_experience`): the experience's new classes' feature Gaussians are stored and,
    from the second experience on, the head is re-trained on sampled features (`ClassAlignment.align`). This
    runs its own backward passes on the head inside `end_experience`: the samples are synthetic features, not
    data the engine's steps could feed through the model.
    As the authors' code (GengDavid/SLCA, models/slca.py: `fc.backup()` before the alignment, `fc.recall()` in
    `after_task`; convs/linears.py: `update(..., freeze_old=True)`): the aligned head serves the evaluations
    after its experience, and the next experience's slow learner starts from the head as it was before the
    alignment; the rows (and biases) of the classes of earlier experiences are frozen while the slow learner
    trains (their values are written back after each step, so momentum and weight decay cannot move them).
    Deviations: the engine's head spans every class from the start (random init, not grown and zero-initialised
    per experience); prediction is restricted to the classes seen so far, as the authors' grown head is; the
    slow learner's epochs, batch size, rate and momentum are the run's settings, not SLCA's own, and its
    optimizer is the run's (the authors build one per task).
    """

    family = "analytic"

    name = "slca"
    description = "slow learner (backbone lr x bcb_lrscale) + classifier alignment on class feature Gaussians"
    params = SLCA_PARAMS

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.alignment = ClassAlignment(**self.hp)
        self.current: list[int] = []
        self.stash: list[Tensor] | None = None
        self.old_rows: list[tuple[Tensor, Tensor, Tensor]] = []  # (head parameter, rows of old classes, values)
        self.before_alignment: list[Tensor] = []  # the head's weight (and bias) before the last alignment

    def backbone_params(self) -> list[nn.Parameter]:
        head = {id(p) for p in last_linear(self.ctx.model).parameters()}
        return [p for p in self.ctx.model.parameters() if p.requires_grad and id(p) not in head]

    def begin_experience(self, exp: Experience) -> None:
        self.current = sorted(exp.classes)
        head = last_linear(self.ctx.model)
        with torch.no_grad():
            for p, saved in zip(head.parameters(), self.before_alignment, strict=False):
                p.copy_(saved)  # the authors' fc.recall(): train on from the slow learner's head
        self.before_alignment = []

    def frozen_rows(self) -> list[tuple[Tensor, Tensor]]:
        """(head parameter, mask of the rows of classes of earlier experiences) for the head's weight and bias."""
        old = [c for c in self.alignment.classes_ if c not in self.current]
        if not old:
            return []
        out = []
        for p in last_linear(self.ctx.model).parameters():
            mask = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
            mask[old] = True
            out.append((p, mask))
        return out

    def loss(self, batch: Batch, out: Outputs) -> Tensor | None:
        logits = out["new"]
        cur = torch.tensor(self.current, device=logits.device)
        remap = torch.full((logits.shape[1],), -1, dtype=torch.long, device=logits.device)
        remap[cur] = torch.arange(len(cur), device=logits.device)
        return nn.functional.cross_entropy(logits[:, cur], remap[batch.new.y])

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        if self.hp["bcb_lrscale"] != 1.0:
            self.stash = [p.detach().clone() for p in self.backbone_params()]
        self.old_rows = [(p, mask, p.detach()[mask].clone()) for p, mask in self.frozen_rows()]

    @torch.no_grad()
    def after_step(self, batch: Batch, out: Outputs) -> None:
        for p, mask, values in self.old_rows:
            p[mask] = values
        self.old_rows = []
        if self.stash is None:
            return
        scale = self.hp["bcb_lrscale"]
        for p, old in zip(self.backbone_params(), self.stash, strict=True):
            if scale == 0.0:
                p.copy_(old)
            else:
                p.sub_(old).mul_(scale).add_(old)
        self.stash = None

    def end_experience(self, exp: Experience) -> None:
        ctx = self.ctx
        feats, labels, _ = experience_features(ctx.model, ctx.stream, exp, ctx.prepare, "backbone")
        self.alignment.add_experience(feats, labels)
        head = last_linear(ctx.model)
        if self.alignment.num_experiences >= 2:  # the authors' fc.backup(): recalled when the next one begins
            self.before_alignment = [p.detach().clone() for p in head.parameters()]
        self.alignment.align(head)

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        scores = model(x)
        seen = sorted(set(self.alignment.classes_) | set(self.current))
        if not seen:
            return scores
        unseen = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
        unseen[seen] = False
        return scores.masked_fill(unseen, float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        return {"alignment": self.alignment.state_dict(), "current": list(self.current),
                "before_alignment": list(self.before_alignment)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alignment.load_state_dict(state["alignment"])
        self.current = list(state["current"])
        self.before_alignment = list(state.get("before_alignment", []))
