"""SCR, supervised contrastive replay (Mai, Li, Kim, Sanner; CVPR-W 2021, "Supervised Contrastive Replay:
Revisiting the Nearest Class Mean Classifier in Online Class-Incremental Continual Learning"; authors' code
RaptorMai/online-continual-learning, agents/scr.py and utils/loss.py, read for this file).

    each step: new batch (x, y); memory batch (x_m, y_m) drawn at random from a reservoir memory
        B = [x_m; x] with labels Y = [y_m; y];  B' = augment(B)
        z = normalise(projection(h(.))) of B and B' (h: the backbone's penultimate features)
        L = SupCon([z(B); z(B')], [Y; Y], temperature)          (Khosla et al. 2020, L_out, both views anchors)
        one SGD step on L; then the new batch is offered to the reservoir
    predict (NCM): mu_c = normalise(mean over the memory's rows of class c of normalise(h(x)));
        y* = argmin_c || normalise(h(x)) - mu_c ||      (scores: minus the distance; classes absent: -inf)

The linear head of the model is not trained (SCR has no cross-entropy); the projection head (in -> in -> 128,
ReLU, as the authors' SupConResNet 'mlp' head) is only used by the loss.

Deviations and choices:
- the memory is the library's reservoir of 500 samples with 32 replayed rows per step (the paper: 100);
- the very first step, when the memory is still empty, trains on the new batch and its view alone (the
  authors' loop skips the update while the memory is empty);
- augmentation: random resized crop (scale 0.2-1) + horizontal flip by one affine resampling, no colour
  jitter (grey images); non-image inputs get Gaussian noise; drawn from a private checkpointed generator;
- the NCM class means are recomputed from the memory after each step on the first evaluation that needs them
  (the authors recompute them at every evaluation);
- the authors' configs also turn on a "review trick" (one epoch of SupCon over the memory after each task,
  gradients / 10) and use temperature 0.1 (0.07 here); neither changed split-fashion-mnist beyond seed noise
  (audit 2026-12-02).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, Segment, register
from lifelong.strategies.exemplars import class_means, features_of
from lifelong.strategies.prototypes import EPS, FeatureTap, Prototyped, augment, generator_from, supcon_loss, wrap
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase


def ncm_scores(features: Tensor, means: Tensor) -> Tensor:
    """Minus the Euclidean distance of each L2-normalised feature row to each class mean (n, classes)."""
    return -torch.cdist(F.normalize(features, dim=1), means)


@register
class SCR(ReplayBase):
    name = "scr"
    task_free = True
    family = "prototype"
    composable = False
    description = "supervised contrastive replay: SupCon on new + replayed views, nearest-class-mean prediction"
    params = {
        **BUFFER_PARAMS,
        "temperature": Param(0.07, "temperature of the supervised contrastive loss", low=0.0, low_open=True),
        "proj_dim": Param(128, "width of the projection space", low=1),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.gen = generator_from(ctx.generator)
        self.tap = FeatureTap()
        self.means: tuple[list[int], Tensor] | None = None

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        model = wrap(model, self.gen, self.hp["proj_dim"], self.ctx.stream.num_classes, prototypes=False)
        self.tap.attach(model)
        return model

    def view(self, x: Tensor) -> Tensor:
        return augment(x, tuple(self.ctx.stream[0].data.input_shape), self.gen, scale=(0.2, 1.0))

    def training_batch(self, batch: Batch) -> Batch:
        old = self.replay()
        if old is not None:
            batch.add(f"{self.name}.mem", self.ctx.segment(old["raw"], old["y"]))
        x = batch.x  # new and replayed rows prepared together (uint8 -> float once), as the engine would
        y = torch.cat([s.y for _, s in batch])
        batch.add(f"{self.name}.view", Segment(self.view(x), y, task=self.ctx.task_of(y)))
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        model: Prototyped = self.ctx.model  # type: ignore[assignment]
        self.tap.attach(model)
        h = self.tap.features(model, out.all, batch.x)
        z = F.normalize(model.proj(h), dim=1, eps=EPS)
        y = torch.cat([s.y for _, s in batch])
        return supcon_loss(z, y, self.hp["temperature"])

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.tap.clear()
        self.means = None

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)
        self.means = None

    # --- evaluation ---------------------------------------------------------------------------------------
    def class_means(self, model: nn.Module) -> tuple[list[int], Tensor] | None:
        """(classes in the memory, their NCM means of normalised penultimate features), cached until a step."""
        if self.means is None and len(self.memory) > 0:
            n = len(self.memory)
            raw, y = self.memory.store["raw"][:n], self.memory.store["y"][:n]
            classes = sorted(set(y.tolist()))
            self.means = (classes, class_means(features_of(model, self.ctx.prepare, raw), y, classes))
        return self.means

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        got = self.class_means(model)
        if got is None:
            return model(x)
        classes, means = got
        scores = torch.full((len(x), self.ctx.stream.num_classes), float("-inf"), device=x.device)
        with torch.no_grad():
            h = features_of(model, lambda t: t, x)
        scores[:, torch.as_tensor(classes, device=x.device)] = ncm_scores(h, means.to(h.device)).to(scores.dtype)
        return scores

    # --- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.gen.set_state(state["gen"])
        self.means = None
