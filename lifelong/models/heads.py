"""Classification heads that replace a model's last Linear layer (LUCIR's cosine-normalised head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import last_linear
from lifelong.errors import LifelongError


class CosineLinear(nn.Linear):
    """sigma * cos(w_c, f) for every class c: weights and features L2-normalised, a learnable scale sigma
    (LUCIR, Hou et al. 2019, Eq. 3), no bias. A subclass of nn.Linear so that it stays the model's last Linear
    layer (features are read in front of it)."""

    def __init__(self, in_features: int, out_features: int, sigma: float = 1.0) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.sigma = nn.Parameter(torch.tensor(float(sigma)))

    def cosine(self, features: Tensor) -> Tensor:
        """cos(w_c, f) without the scale."""
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, features: Tensor) -> Tensor:
        return self.sigma * self.cosine(features)


def replace_last_linear(model: nn.Module, head: nn.Module) -> nn.Module:
    """Put `head` in place of the model's last nn.Linear (in registration order), in place; returns the model."""
    target = last_linear(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is target:
                setattr(parent, name, head)
                return model
    raise LifelongError(f"{type(model).__name__}: its last Linear layer is not a child module and cannot be replaced")


def cosine_head_for(model: nn.Module, sigma: float = 1.0) -> CosineLinear:
    """A cosine head of the shape of the model's last Linear layer, starting from its weights (no RNG draw), with
    the scale `sigma`."""
    old = last_linear(model)
    head = CosineLinear(old.in_features, old.out_features, sigma).to(old.weight.device)
    with torch.no_grad():
        head.weight.copy_(old.weight)
    return head
