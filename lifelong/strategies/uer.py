"""UER, unbias experience replay (Lin et al., ACM MM 2023, "UER: A Heuristic Bias Addressing Approach for Online
Continual Learning"; specification: methods.md section 6).

The dot-product logit of class c splits into a norm factor and an angle factor,

    z_c = w_c^T h + b_c,   w_c^T h = ||w_c|| ||h|| cos(theta_c),   a_c = cos(theta_c) = w_c^T h / (||w_c|| ||h||),

and UER learns the current samples through the angle factor only and the replayed ones through both:

    each step: B_new = incoming batch, B_buf = reservoir draw of replay_batch_size samples
        L = CE(s * a(x_new), y_new) + CE(z(x_buf), y_buf)
        SGD step on L; then add B_new to the reservoir
    prediction: the dot-product logits z (the model's own output)

The gradient of the first term with respect to ||w_c|| is zero, so the norms of the new classes' weights (the
main source of recency bias) only grow from replayed data, where old and new classes are both present.

Implementation: the penultimate features h are read by a forward hook on the model's last `nn.Linear` (the head
of every built-in model) during the engine's own forward pass, so a step costs what ER's does. When that pass
cannot be matched (a model whose output is not the head's output object, or logits computed elsewhere) the
features of the new rows are recomputed with one more forward pass.

Deviations and choices (the authors' repository, FelixHuiweiLin/UER, holds only a README, so nothing below could
be checked against their code):
- the scale s (`scale`) is a hyperparameter, picked by a sweep (docs/zoo/uer.md); methods.md leaves it unverified;
- the two terms have equal weights, each a mean over its own rows (methods.md);
- the head's bias b_c is not part of the angle factor: it is trained by the replayed term only, like the norms;
- the library trains offline (epochs over each experience) as well as online (epochs=1, the paper's setting);
- UER replaces the loss, so it cannot be combined with another strategy that replaces the loss; in a
  composition the loss reads only the new rows and UER's own replayed rows.
"""

from __future__ import annotations

import threading
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import last_linear
from lifelong.params import Param
from lifelong.strategies.base import NEW, Batch, Outputs, register
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase

EPS = 1e-12


def angle_logits(h: Tensor, weight: Tensor) -> Tensor:
    """cos(theta_c) between each feature row of `h` (N, D) and each class weight row of `weight` (C, D)."""
    return F.normalize(h, dim=1, eps=EPS) @ F.normalize(weight, dim=1, eps=EPS).t()


def norm_factor(h: Tensor, weight: Tensor) -> Tensor:
    """||w_c|| ||h|| for each row of `h` and each class: with `angle_logits`, w_c^T h = norm * angle."""
    return h.norm(dim=1, keepdim=True) * weight.norm(dim=1).unsqueeze(0)


@register
class UER(ReplayBase):
    name = "uer"
    task_free = True
    description = "unbias experience replay: new samples by cosine (angle) logits, replayed ones by dot products"
    params = {
        **BUFFER_PARAMS,
        "scale": Param(16.0, "scale s of the cosine logits of the new samples (s * cos theta)", low=0.0,
                       low_open=True),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self._thread = threading.get_ident()
        self._head: nn.Linear | None = None
        self._handle: Any = None
        self._seen: list[tuple[Tensor, Tensor]] = []  # (head output, head input) of recent forward passes

    # --- reading the features of the engine's forward pass -----------------------------------------------
    def _capture(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if threading.get_ident() == self._thread:  # not the background evaluation thread
            self._seen = [*self._seen[-1:], (output, args[0])]

    def _hook_head(self) -> nn.Linear:
        head = last_linear(self.ctx.model)
        if head is not self._head:
            if self._handle is not None:
                self._handle.remove()
            self._head, self._handle = head, head.register_forward_hook(self._capture)
        return head

    def _features(self, out: Outputs, x: Tensor, rows: slice) -> Tensor:
        """Penultimate features of the rows `rows` of the forward pass that produced `out` (recomputed from the
        inputs `x` of those rows when that pass was not seen)."""
        for output, h in reversed(self._seen):
            if output is out.all:
                return h.reshape(len(output), -1)[rows]
        self._seen = []
        self.ctx.model(x)
        return self._seen[-1][1].reshape(len(x), -1)

    # --- hooks -------------------------------------------------------------------------------------------
    def training_batch(self, batch: Batch) -> Batch:
        self._hook_head()
        old = self.replay()
        if old is not None:
            batch.add(self.name, self.ctx.segment(old["raw"], old["y"], scored=True))
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        head = self._hook_head()
        new = batch.new
        h = self._features(out, new.x, out.slices[NEW])
        loss = self.ctx.cross_entropy(self.hp["scale"] * angle_logits(h, head.weight), new.y)
        if self.name in batch:
            loss = loss + self.ctx.cross_entropy(out[self.name], batch[self.name].y)
        return loss

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self._seen = []

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)
