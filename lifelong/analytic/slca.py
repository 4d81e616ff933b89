"""SLCA: slow learner + classifier alignment (Zhang et al., ICCV 2023), methods.md section 4.2.

Per experience: expand the head, train backbone (lr * bcb_lrscale) and head (lr) with cross-entropy over the
current experience's classes only; store each new class's feature mean and covariance (+ cov_reg * I);
from the second experience on, re-train the whole head on features sampled from the class Gaussians (old
classes' means mildly shrunk) with logit normalisation. bcb_lrscale = 0 freezes the backbone
(bit-identical, eval mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lifelong.errors import LifelongError
from lifelong.params import Param, resolve

SLCA_PARAMS = {
    "lr": Param(0.01, "head learning rate", low=0.0, low_open=True),
    "bcb_lrscale": Param(0.01, "backbone LR = lr * bcb_lrscale (0 freezes the backbone)", low=0.0),
    "epochs": Param(5, "slow-learner epochs per experience", low=0),
    "batch_size": Param(128, "slow-learner batch size", low=1),
    "momentum": Param(0.9, "SGD momentum", low=0.0, high=1.0),
    "weight_decay": Param(5e-4, "SGD weight decay", low=0.0),
    "ca_epochs": Param(5, "classifier-alignment epochs (0 = slow learner only)", low=0),
    "ca_samples": Param(256, "features sampled per class and CA epoch", low=1),
    "ca_lr": Param(0.01, "classifier-alignment learning rate", low=0.0, low_open=True),
    "logit_norm": Param(0.1, "temperature tau of the logit normalisation in CA (0 disables)", low=0.0),
    "cov_reg": Param(1e-4, "added to the diagonal of each class covariance", low=0.0),
    "seed": Param(0, "seed of shuffling and Gaussian sampling", low=0),
}


def normalized_logits(z: torch.Tensor, blocks: list[list[int]], tau: float) -> torch.Tensor:
    """z / (tau * mean_j ||z[:, block_j]||_2), per sample: invariant to rescaling all logits by a > 0."""
    if tau <= 0:
        return z
    norms = torch.stack([z[:, b].norm(dim=1) for b in blocks], 1).mean(1, keepdim=True)
    return z / (tau * norms + 1e-7)


class SLCA:
    """SLCA over raw inputs: `backbone(x)` gives `feature_dim` features; a linear head grows per class."""

    kind = "slca"
    supports_unlearning = False
    PARAMS = SLCA_PARAMS

    def __init__(self, backbone: nn.Module, feature_dim: int, **params: Any) -> None:
        self.params = resolve(self.PARAMS, params, self.kind)
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.head = nn.Linear(self.feature_dim, 1)  # replaced (zero-initialised) when the first classes arrive
        self.task_of: dict[int, int] = {}  # class -> experience index
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # class -> (mean, cov) float64
        self.num_experiences = 0
        self.gen = torch.Generator().manual_seed(self.params["seed"])

    @property
    def classes_(self) -> list[int]:
        return sorted(self.task_of)

    @property
    def state_nbytes(self) -> int:
        return sum(m.numel() * 8 + c.numel() * 8 for m, c in self.stats.values())

    def _grow_head(self, num_classes: int) -> None:
        old = self.head
        if self.stats and num_classes <= old.out_features:
            return
        new = nn.Linear(self.feature_dim, num_classes)
        with torch.no_grad():
            new.weight.mul_(0)
            new.bias.zero_()
            if self.stats:  # keep what earlier experiences learned
                k = min(old.out_features, num_classes)
                new.weight[:k] = old.weight[:k]
                new.bias[:k] = old.bias[:k]
        self.head = new

    @torch.no_grad()
    def features(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        was = self.backbone.training
        self.backbone.eval()
        out = torch.cat([self.backbone(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
        self.backbone.train(was)
        return out.float()

    def fit_experience(self, inputs: torch.Tensor, labels: torch.Tensor) -> SLCA:
        p = self.params
        labels = torch.as_tensor(labels, dtype=torch.int64)
        new = sorted(set(labels.tolist()) - set(self.task_of))
        if not new:
            raise LifelongError("SLCA is class-incremental: this experience has no new class")
        k = self.num_experiences
        for c in new:
            self.task_of[c] = k
        self._grow_head(max(self.task_of) + 1)
        cur = torch.tensor(sorted(set(labels.tolist())))
        remap = torch.full((self.head.out_features,), -1, dtype=torch.int64)
        remap[cur] = torch.arange(len(cur))
        frozen = p["bcb_lrscale"] == 0
        groups = [{"params": self.head.parameters(), "lr": p["lr"]}]
        if not frozen:
            groups.append({"params": self.backbone.parameters(), "lr": p["lr"] * p["bcb_lrscale"]})
        opt = torch.optim.SGD(groups, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        milestone = max(1, int(round(0.9 * p["epochs"])))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [milestone], 0.1)
        self.backbone.train(not frozen)
        n = len(labels)
        for _ in range(p["epochs"]):
            order = torch.randperm(n, generator=self.gen)
            for s in range(0, n, p["batch_size"]):
                idx = order[s : s + p["batch_size"]]
                if frozen:
                    with torch.no_grad():
                        f = self.backbone(inputs[idx])
                else:
                    f = self.backbone(inputs[idx])
                z = self.head(f)[:, cur]
                loss = nn.functional.cross_entropy(z, remap[labels[idx]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        self.backbone.eval()
        feats = self.features(inputs).double()
        for c in new:
            fc = feats[labels == c]
            mu = fc.mean(0)
            cov = torch.cov(fc.T) if len(fc) > 1 else torch.zeros(self.feature_dim, self.feature_dim)
            self.stats[c] = (
                mu,
                cov.double() + p["cov_reg"] * torch.eye(self.feature_dim, dtype=torch.float64),
            )
        self.num_experiences += 1
        if self.num_experiences >= 2 and p["ca_epochs"] > 0:
            self._align()
        return self

    def _align(self) -> None:
        p = self.params
        k = self.num_experiences
        classes = self.classes_
        blocks_by_task: dict[int, list[int]] = {}
        for c in classes:
            blocks_by_task.setdefault(self.task_of[c], []).append(c)
        blocks = [blocks_by_task[t] for t in sorted(blocks_by_task)]
        chol = {}
        for c in classes:
            mu, cov = self.stats[c]
            L, info = torch.linalg.cholesky_ex(cov)
            if int(info) != 0:
                L = torch.diag(cov.diagonal().clamp_min(0).sqrt())
            chol[c] = (mu * (0.9 + 0.1 * (self.task_of[c] + 1) / k), L)
        opt = torch.optim.SGD(self.head.parameters(), lr=p["ca_lr"], momentum=0.9, weight_decay=p["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, p["ca_epochs"])
        bs = 256
        for _ in range(p["ca_epochs"]):
            xs, ys = [], []
            for c in classes:
                mu, L = chol[c]
                eps = torch.randn(p["ca_samples"], self.feature_dim, generator=self.gen, dtype=torch.float64)
                xs.append((mu + eps @ L.T).float())
                ys.append(torch.full((p["ca_samples"],), c))
            x, y = torch.cat(xs), torch.cat(ys)
            order = torch.randperm(len(y), generator=self.gen)
            for s in range(0, len(y), bs):
                idx = order[s : s + bs]
                z = self.head(x[idx])
                loss = nn.functional.cross_entropy(normalized_logits(z, blocks, p["logit_norm"]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()

    @torch.no_grad()
    def decision_function(self, inputs: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(inputs))
        mask = torch.ones(z.shape[1], dtype=torch.bool)
        mask[self.classes_] = False
        return z.masked_fill(mask, float("-inf"))

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.task_of:
            raise LifelongError("the model has not learned any class yet")
        return self.decision_function(inputs).argmax(1)

    def unlearn(self, *args: Any, **kwargs: Any) -> None:
        raise LifelongError("slca is trained by backprop and does not support exact unlearning; use acil or g-acil")

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "format": 1,
            "params": dict(self.params),
            "feature_dim": self.feature_dim,
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "task_of": dict(self.task_of),
            "num_experiences": self.num_experiences,
        }
