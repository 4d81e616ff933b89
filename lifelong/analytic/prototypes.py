"""Class prototypes of frozen features with cosine-similarity prediction (SimpleCIL, Zhou et al. 2023)."""

from __future__ import annotations

from typing import Any

import torch

from lifelong.analytic.base import as_features
from lifelong.analytic.nmc import NMC


class Prototypes(NMC):
    """Per-class means of the raw (not normalised) features; scores are cos(f, mu_c) (unlearned: -inf).

    The sums and counts are NMC's (float64, exact unlearning); only the prediction differs."""

    kind = "simplecil"
    PARAMS: dict = {}

    def _prep(self, features: Any) -> torch.Tensor:
        return as_features(features, self.in_features)

    def decision_function(self, features: Any) -> torch.Tensor:
        """cos(x, mu_c) for every class index (unlearned / unseen classes: -inf)."""
        x = torch.nn.functional.normalize(self._prep(features), dim=1)
        mu = torch.nn.functional.normalize(self.means, dim=1)
        return self._mask_unlearned(x @ mu.T)
