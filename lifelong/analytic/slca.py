"""SLCA's classifier alignment (Zhang et al., ICCV 2023): class feature statistics and head re-training.

The slow learner itself is the `slca` strategy (lifelong/strategies/analytic.py) on the engine's SGD steps.
This module holds what happens at each experience end: the new classes' feature mean and covariance
(+ cov_reg * I) are stored, and from the second experience on the whole head is re-trained on features sampled
from the class Gaussians (old classes' means mildly shrunk) with logit normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.minibatch import descend
from lifelong.params import Param, resolve

SLCA_PARAMS = {
    "bcb_lrscale": Param(0.01, "backbone learning rate = lr * bcb_lrscale (0 freezes the backbone)", low=0.0),
    "ca_weight_decay": Param(5e-4, "weight decay of the classifier alignment", low=0.0),
    "ca_epochs": Param(5, "classifier-alignment epochs (0 = slow learner only)", low=0),
    "ca_samples": Param(256, "features sampled per class and CA epoch", low=1),
    "ca_lr": Param(0.01, "classifier-alignment learning rate", low=0.0, low_open=True),
    "logit_norm": Param(0.1, "temperature tau of the logit normalisation in CA (0 disables)", low=0.0),
    "cov_reg": Param(1e-4, "added to the diagonal of each class covariance", low=0.0),
    "seed": Param(0, "seed of the Gaussian sampling and shuffling in CA", low=0),
}
CA_BATCH = 256


def normalized_logits(z: torch.Tensor, blocks: list[list[int]], tau: float) -> torch.Tensor:
    """z / (tau * mean_j ||z[:, block_j]||_2), per sample: invariant to rescaling all logits by a > 0."""
    if tau <= 0:
        return z
    norms = torch.stack([z[:, b].norm(dim=1) for b in blocks], 1).mean(1, keepdim=True)
    return z / (tau * norms + 1e-7)


class ClassAlignment:
    """Per-class Gaussian statistics of the features and the classifier alignment of a linear head."""

    def __init__(self, **params: Any) -> None:
        self.params = resolve(SLCA_PARAMS, params, "slca")
        self.task_of: dict[int, int] = {}  # class -> experience in which it first appeared
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # class -> (mean, cov) float64
        self.num_experiences = 0
        self.gen = torch.Generator().manual_seed(self.params["seed"])

    @property
    def classes_(self) -> list[int]:
        return sorted(self.task_of)

    def add_experience(self, features: torch.Tensor, labels: torch.Tensor) -> list[int]:
        """Record the statistics of the experience's classes not seen before; returns them."""
        feats, labels = features.double().cpu(), labels.cpu()
        new = sorted(set(labels.tolist()) - set(self.task_of))
        dim = feats.shape[1]
        for c in new:
            self.task_of[c] = self.num_experiences
            fc = feats[labels == c]
            cov = torch.cov(fc.T) if len(fc) > 1 else torch.zeros(dim, dim, dtype=torch.float64)
            self.stats[c] = (fc.mean(0), cov.reshape(dim, dim) + self.params["cov_reg"] * torch.eye(dim,
                                                                                                 dtype=torch.float64))
        self.num_experiences += 1
        return new

    def align(self, head: nn.Linear) -> None:
        """Re-train `head` on sampled features of every seen class (an auxiliary fit by `descend`: SGD, cosine
        schedule per epoch); the engine never steps it here."""
        p, k, classes = self.params, self.num_experiences, self.classes_
        if k < 2 or p["ca_epochs"] == 0 or not classes:
            return
        device = head.weight.device
        blocks_by_task: dict[int, list[int]] = {}
        for i, c in enumerate(classes):
            blocks_by_task.setdefault(self.task_of[c], []).append(i)
        blocks = [blocks_by_task[t] for t in sorted(blocks_by_task)]
        chol = {}
        for c in classes:
            mu, cov = self.stats[c]
            L, info = torch.linalg.cholesky_ex(cov)
            if int(info) != 0:
                L = torch.diag(cov.diagonal().clamp_min(0).sqrt())
            chol[c] = (mu * (0.9 + 0.1 * (self.task_of[c] + 1) / k), L)
        cols = torch.tensor(classes, device=device)
        opt = torch.optim.SGD(head.parameters(), lr=p["ca_lr"], momentum=0.9, weight_decay=p["ca_weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, p["ca_epochs"])

        def epochs() -> Iterator[tuple[Tensor, Callable[[Tensor], Tensor]]]:
            """Each epoch draws fresh features of every seen class; the cosine schedule steps after it."""
            for _ in range(p["ca_epochs"]):
                xs, ys = [], []
                for i, c in enumerate(classes):
                    mu, L = chol[c]
                    eps = torch.randn(p["ca_samples"], len(mu), generator=self.gen, dtype=torch.float64)
                    xs.append((mu + eps @ L.T).float())
                    ys.append(torch.full((p["ca_samples"],), i))
                x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)

                def loss_of(idx: Tensor, x: Tensor = x, y: Tensor = y) -> Tensor:
                    z = head(x[idx])[:, cols]
                    return nn.functional.cross_entropy(normalized_logits(z, blocks, p["logit_norm"]), y[idx])

                yield torch.randperm(len(y), generator=self.gen).to(device), loss_of
                sched.step()

        descend(opt, epochs(), CA_BATCH)
        head.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and lists only (loads with torch.load(weights_only=True))."""
        classes = self.classes_
        return {
            "classes": classes,
            "tasks": [self.task_of[c] for c in classes],
            "means": [self.stats[c][0] for c in classes],
            "covs": [self.stats[c][1] for c in classes],
            "num_experiences": self.num_experiences,
            "generator": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_of = dict(zip(state["classes"], state["tasks"], strict=True))
        self.stats = {c: (m, v) for c, m, v in zip(state["classes"], state["means"], state["covs"], strict=True)}
        self.num_experiences = int(state["num_experiences"])
        self.gen.set_state(state["generator"])
