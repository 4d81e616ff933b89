"""NMC: nearest class mean on frozen (pretrained) features (Janson et al. 2022), incremental and task-free.

Keeps per-class feature sums and counts (float64), so learning in any split or order gives the same means, and
samples can be removed exactly. Features are L2-normalised first by default; the means are not re-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifelong.analytic.base import DTYPE, AnalyticModel, SampleLedger, as_features, as_labels
from lifelong.params import Param

NMC_PARAMS = {"normalize": Param(True, "L2-normalise features before averaging and at prediction")}


class NMC(AnalyticModel):
    kind = "nmc"
    PARAMS = NMC_PARAMS

    def __init__(self, in_features: int, **params: Any) -> None:
        self.configure(in_features, params)
        self.sums = torch.zeros(0, self.in_features, dtype=DTYPE)
        self.counts = torch.zeros(0, dtype=DTYPE)
        self.ledger = SampleLedger()

    def _prep(self, features: Any) -> torch.Tensor:
        x = as_features(features, self.in_features)
        if self.params["normalize"]:
            x = torch.nn.functional.normalize(x, dim=1)
        return x

    @property
    def means(self) -> torch.Tensor:
        return self.sums / self.counts.clamp_min(1).unsqueeze(1)

    @property
    def state_nbytes(self) -> int:
        return (self.sums.numel() + self.counts.numel()) * 8

    def _grow(self, num_classes: int) -> None:
        extra = num_classes - self.sums.shape[0]
        if extra > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(extra, self.in_features)])
            self.counts = torch.cat([self.counts, self.counts.new_zeros(extra)])

    def fit_increment(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> NMC:
        raw = as_features(features, self.in_features)
        y = as_labels(labels, raw.shape[0])
        if raw.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(raw, y, sample_ids)
        self.ledger.check_add(ids, y.tolist(), digests)
        x = self._prep(raw)
        self._grow(int(y.max()) + 1)
        self.sums.index_add_(0, y, x)
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=DTYPE))
        self.ledger.add(ids, y.tolist(), digests)
        return self

    def decision_function(self, features: Any) -> torch.Tensor:
        """-||x - mu_c||^2 for every class index (unlearned / unseen classes: -inf)."""
        x = self._prep(features)
        mu = self.means
        d2 = (x * x).sum(1, keepdim=True) - 2 * x @ mu.T + (mu * mu).sum(1)
        return self._mask_unlearned(-d2)

    def unlearn(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> NMC:
        raw = as_features(features, self.in_features)
        y = as_labels(labels, raw.shape[0])
        if raw.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(raw, y, sample_ids)
        self.ledger.check_remove(ids, y.tolist(), digests)
        x = self._prep(raw)
        sums, counts = self.sums.clone(), self.counts.clone()
        sums.index_add_(0, y, -x)
        counts.index_add_(0, y, -torch.ones_like(y, dtype=DTYPE))
        self.ledger.remove(ids)
        for c in set(y.tolist()):
            if c not in self.ledger.class_counts:
                sums[c] = 0
        self.sums, self.counts = sums, counts
        return self

    def state_dict(self) -> dict:
        return {
            **self.state_header(),
            "sums": self.sums,
            "counts": self.counts,
            "ledger": self.ledger.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> NMC:
        m = cls(state["in_features"], **state["params"])
        m.sums, m.counts = state["sums"].to(DTYPE), state["counts"].to(DTYPE)
        m.ledger = SampleLedger.from_state_dict(state["ledger"])
        return m
