"""Shared pieces of the prototype / contrastive strategies (PRD, OnPro): a projection head and learnable
prototypes carried by the model, a tap that reads the penultimate features of the engine's own forward pass,
batch augmentation from a seeded generator, and the losses (supervised contrastive, OnPro's online-prototype
equilibrium).

The projection head is built from plain parameters (no `nn.Linear`), so the model's last `nn.Linear` stays its
classification head and `lifelong.analytic.features.penultimate` keeps meaning "the input of the head".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import last_linear

EPS = 1e-12


class Projection(nn.Module):
    """Two-layer ReLU MLP `in_dim -> hidden -> out_dim` (SimCLR/SupCon projection head), initialised like
    `nn.Linear` (uniform in +-1/sqrt(fan_in)) from the given generator."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, generator: torch.Generator) -> None:
        super().__init__()

        def uniform(*shape: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(shape[-1] if len(shape) > 1 else in_dim)
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * bound)

        self.w1, self.b1 = uniform(hidden, in_dim), nn.Parameter(torch.zeros(hidden))
        self.w2, self.b2 = uniform(out_dim, hidden), nn.Parameter(torch.zeros(out_dim))

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(F.relu(F.linear(h, self.w1, self.b1)), self.w2, self.b2)


class Prototyped(nn.Module):
    """The user's model (`base`, whose output is unchanged) plus a projection head on its penultimate features
    and, optionally, one learnable prototype per class in the projection space."""

    def __init__(self, base: nn.Module, feature_dim: int, proj_dim: int, num_classes: int,
                 generator: torch.Generator, prototypes: bool) -> None:
        super().__init__()
        self.base = base
        self.proj = Projection(feature_dim, feature_dim, proj_dim, generator)
        self.prototypes = (nn.Parameter(F.normalize(torch.randn(num_classes, proj_dim, generator=generator), dim=1))
                           if prototypes else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)


def wrap(model: nn.Module, ctx_generator: torch.Generator, proj_dim: int, num_classes: int,
         prototypes: bool) -> nn.Module:
    """The model with a projection head (and learnable prototypes), built once, from a seed drawn off the
    strategy's generator (so a resumed run rebuilds the same parameters before loading the weights)."""
    if isinstance(model, Prototyped):
        return model
    init = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=ctx_generator)))
    return Prototyped(model, feature_dim(model), proj_dim, num_classes, init, prototypes=prototypes)


def feature_dim(model: nn.Module) -> int:
    """Width of the model's penultimate features (the input of its last Linear layer)."""
    return last_linear(model).in_features


class FeatureTap:
    """Reads the penultimate features (with their graph) of the engine's forward pass through a forward hook on
    the model's last Linear layer. Only the training thread is recorded (the background probe runs the model
    too); the hook is a closure that checks the module, so a deep copy of the model (a teacher) records nothing."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.head: nn.Module | None = None
        self.handle: Any = None
        self.seen: list[tuple[Tensor, Tensor]] = []

    def attach(self, model: nn.Module) -> None:
        head = last_linear(model)
        if head is self.head:
            return
        if self.handle is not None:
            self.handle.remove()
        tap = self

        def capture(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            if module is tap.head and threading.get_ident() == tap.thread:
                tap.seen = [*tap.seen[-1:], (output, args[0])]

        self.head, self.handle = head, head.register_forward_hook(capture)

    def features(self, model: nn.Module, logits: Tensor, x: Tensor) -> Tensor:
        """Penultimate features of the forward pass that returned `logits` (recomputed from `x` if unseen)."""
        for output, h in reversed(self.seen):
            if output is logits:
                return h.reshape(len(output), -1)
        self.seen = []
        model(x)
        return self.seen[-1][1].reshape(len(x), -1)

    def clear(self) -> None:
        self.seen = []


def augment(x: Tensor, shape: Sequence[int], generator: torch.Generator, scale: tuple[float, float] = (0.7, 1.0),
            flip: bool = True, shift: float = 0.1, noise: float = 0.1) -> Tensor:
    """A random view of each prepared input row, drawn from `generator` (vectorised, no loop over rows).

    Images (shape (C, H, W)): a random resized crop (area scale in `scale`, centre shifted by up to `shift` of
    the side) and a horizontal flip with probability 1/2, by one affine resampling. Other inputs: additive
    Gaussian noise of `noise` times each row's standard deviation."""
    n = len(x)
    if len(shape) != 3:
        std = x.std(dim=1, keepdim=True) if x.shape[1] > 1 else torch.ones_like(x[:, :1])
        return x + noise * std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    r = torch.rand(n, 4, generator=generator).to(x.device, x.dtype)
    s = (scale[0] + (scale[1] - scale[0]) * r[:, 0]).sqrt()
    sign = torch.where(r[:, 1] < 0.5, -1.0, 1.0).to(x.dtype) if flip else torch.ones_like(s)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = s * sign
    theta[:, 1, 1] = s
    theta[:, 0, 2] = (r[:, 2] * 2 - 1) * shift * 2
    theta[:, 1, 2] = (r[:, 3] * 2 - 1) * shift * 2
    img = x.reshape(n, *shape)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, padding_mode="zeros", align_corners=False).reshape(n, -1)


def supcon_loss(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on L2-normalised rows `z` (N, d):

        L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t) )

    P(i) = the other rows with the label of i; anchors without a positive are left out."""
    n = len(z)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    count = pos.sum(1)
    keep = count > 0
    if not bool(keep.any()):
        return z.sum() * 0.0
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[keep] / count[keep]
    return -mean_pos.mean()


def online_prototypes(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(classes present, sorted; the mean of `z`'s rows of each of them) - OnPro's online prototypes of a batch."""
    classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
    onehot = F.one_hot(inverse, len(classes)).to(z.dtype)
    return classes, (onehot.t() @ z) / onehot.sum(0).unsqueeze(1)


def ope_loss(z1: Tensor, z2: Tensor, labels: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """OnPro's online prototype equilibrium (Wei et al. 2023, Eq. 3-4, as in the authors' `OPELoss`).

    With p_c^1, p_c^2 the normalised online prototypes (batch means of the normalised projections of class c) of
    the two views and the 2K prototypes stacked, each prototype's positive is its class's prototype in the other
    view and its denominator runs over the other 2K - 1 prototypes of both views:

        L = mean over the 2K prototypes u of  -log( exp(u.u+/t) / sum_{v != u} exp(u.v/t) )

    Returns (loss, the un-normalised class means (p^1 + p^2) / 2, used by the adaptive feedback)."""
    _, m1 = online_prototypes(z1, labels)
    _, m2 = online_prototypes(z2, labels)
    k = len(m1)
    p = F.normalize(torch.cat([m1, m2]), dim=1, eps=EPS)
    logits = (p @ p.t() / temperature).fill_diagonal_(float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    partner = torch.cat([torch.arange(k, 2 * k), torch.arange(k)]).to(z1.device)
    return -log_prob[torch.arange(2 * k, device=z1.device), partner].mean(), (m1 + m2) / 2


def generator_from(ctx_generator: torch.Generator) -> torch.Generator:
    """A private CPU generator seeded from the engine's (its state is checkpointed by the strategy)."""
    return torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=ctx_generator)))
