"""ACIL / G-ACIL (analytic class-incremental learning) with exact ACU unlearning.

Frozen features f -> random frozen buffer phi = ReLU(B f) -> ridge classifier W, kept by recursive least
squares:
    K = (I + X R X^T)^-1,  R <- R - R X^T K X R,  W <- W + R X^T (Y - X W)      (learn a batch)
    K = (I - X R X^T)^-1,  R <- R + R X^T K X R,  W <- W - R X^T (Y - X W)      (unlearn a batch, ACU)
so that W = (sum X^T X + gamma I)^-1 sum X^T Y on whatever is currently learned, whatever the phase split,
batch size or class order. Columns of W are indexed by the class label. See docs: methods.md section 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from lifelong.analytic.base import (
    DTYPE,
    AnalyticModel,
    SampleLedger,
    as_features,
    as_labels,
    check_square_state_fits,
)
from lifelong.errors import LifelongError
from lifelong.params import Param, resolve

ACIL_PARAMS = {
    "buffer_size": Param(2048, "width d_B of the random ReLU buffer layer (state is d_B x d_B float64)", low=1),
    "gamma": Param(0.1, "ridge regulariser gamma (R starts at I/gamma)", low=0.0, low_open=True),
    "seed": Param(0, "seed of the random buffer weights", low=0),
    "chunk_size": Param(1024, "rows absorbed per recursive step (memory vs. speed; result is identical)", low=1),
}


class RandomBuffer:
    """Frozen random linear map B (buffer_size x in_features), PyTorch's default Linear init, no bias."""

    def __init__(self, in_features: int, buffer_size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(in_features)
        self.weight = (torch.rand(buffer_size, in_features, generator=g, dtype=DTYPE) * 2 - 1) * bound

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


class RecursiveRidge:
    """R = (sum X^T X + gamma I)^-1 and W = R sum X^T Y, kept by rank-n (down)dates."""

    def __init__(self, dim: int, gamma: float) -> None:
        self.R = torch.eye(dim, dtype=DTYPE) / gamma
        self.W = torch.zeros(dim, 0, dtype=DTYPE)

    @property
    def nbytes(self) -> int:
        return self.R.numel() * 8 + self.W.numel() * 8

    def one_hot(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(y, num_classes).to(DTYPE)

    def updated(self, X: torch.Tensor, Y: torch.Tensor, sign: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, W) after adding (sign=+1) or removing (sign=-1) the rows X with targets Y; self unchanged."""
        R, W = self.R, self.W
        if Y.shape[1] > W.shape[1]:
            W = torch.cat([W, W.new_zeros(W.shape[0], Y.shape[1] - W.shape[1])], 1)
        for s in range(0, X.shape[0], chunk):
            x, y = X[s : s + chunk], Y[s : s + chunk]
            RXt = R @ x.T
            S = x @ RXt
            S = torch.eye(x.shape[0], dtype=DTYPE) + S if sign > 0 else torch.eye(x.shape[0], dtype=DTYPE) - S
            L, info = torch.linalg.cholesky_ex((S + S.T) / 2)
            if int(info) != 0:
                raise LifelongError(
                    "these samples cannot be removed: they are not (all) part of what the model learned "
                    "(I - X R X^T is not positive definite); nothing was changed"
                )
            R = R - sign * (RXt @ torch.cholesky_solve(RXt.T, L))
            R = (R + R.T) / 2
            W = W + sign * (R @ (x.T @ (y - x @ W)))
        return R, W


class ACIL(AnalyticModel):
    """ACIL: class-incremental analytic learning on frozen features (exemplar-free, joint ridge solution).

    `fit_increment` may be called with any split of the data (phases, mini-batches, any class order); the
    result is the joint ridge solution on everything learned. `unlearn` removes samples exactly (ACU) using
    only them.
    """

    kind = "acil"
    PARAMS = ACIL_PARAMS

    def __init__(self, in_features: int, **params: Any) -> None:
        self.configure(in_features, params)
        d = self.params["buffer_size"]
        check_square_state_fits("buffer_size", d, self._state_matrices)
        self.buffer = RandomBuffer(self.in_features, d, self.params["seed"])
        self.ridge = RecursiveRidge(d, self.params["gamma"])
        self.ledger = SampleLedger()

    _state_matrices = 3  # R, its update, and R X^T K X R

    # ----------------------------------------------------------------- features
    def expand(self, features: Any) -> torch.Tensor:
        """phi(x) = ReLU(B x): the buffer-layer features the ridge classifier sees."""
        return torch.relu(self.buffer(as_features(features, self.in_features)))

    @property
    def W(self) -> torch.Tensor:
        return self.ridge.W

    @property
    def R(self) -> torch.Tensor:
        return self.ridge.R

    @property
    def state_nbytes(self) -> int:
        """Bytes of the learned state: d_B x d_B R, d_B x C W and the random buffer."""
        return self.ridge.nbytes + self.buffer.weight.numel() * 8

    # ----------------------------------------------------------------- learning
    def fit_increment(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> ACIL:
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        if x.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(x, y, sample_ids)
        self.ledger.check_add(ids, y.tolist(), digests)
        X = torch.relu(self.buffer(x))
        C = max(self.ridge.W.shape[1], int(y.max()) + 1)
        self.ridge.R, self.ridge.W = self.ridge.updated(X, self.ridge.one_hot(y, C), +1, self.params["chunk_size"])
        self.ledger.add(ids, y.tolist(), digests)
        return self

    def decision_function(self, features: Any) -> torch.Tensor:
        return self._mask_unlearned(self.expand(features) @ self.ridge.W)

    # ----------------------------------------------------------------- unlearning
    def unlearn(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> ACIL:
        """Exactly remove these learned samples (ACU); refuses, changing nothing, if any was never learned."""
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        if x.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(x, y, sample_ids)
        self.ledger.check_remove(ids, y.tolist(), digests)
        X = torch.relu(self.buffer(x))
        Y = self.ridge.one_hot(y, self.ridge.W.shape[1])
        R, W = self.ridge.updated(X, Y, -1, self.params["chunk_size"])
        self.ledger.remove(ids)
        for c in set(y.tolist()):
            if c not in self.ledger.class_counts:  # no data of c left: its column is exactly zero
                W[:, c] = 0
        self.ridge.R, self.ridge.W = R, W
        return self

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        return {
            **self.state_header(),
            "buffer_weight": self.buffer.weight,
            "R": self.ridge.R,
            "W": self.ridge.W,
            "ledger": self.ledger.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ACIL:
        m = cls.__new__(cls)
        m.params = resolve(cls.PARAMS, state["params"], cls.kind)
        m.in_features = int(state["in_features"])
        m.buffer = RandomBuffer.__new__(RandomBuffer)
        m.buffer.weight = state["buffer_weight"].to(DTYPE)
        m.ridge = RecursiveRidge.__new__(RecursiveRidge)
        m.ridge.R, m.ridge.W = state["R"].to(DTYPE), state["W"].to(DTYPE)
        m.ledger = SampleLedger.from_state_dict(state["ledger"])
        return m


class GACIL(ACIL):
    """G-ACIL: generalised CIL — classes re-appear, phases mix old and new classes, data come in mini-batches.

    The recursion is the same as ACIL's (the paper's result is that it stays equal to the joint solution
    when a batch mixes exposed and unexposed classes); this class exists so runs record the protocol.
    """

    kind = "g-acil"


def ridge_solution(features: torch.Tensor, labels: torch.Tensor, gamma: float, num_classes: int | None = None):
    """(W, R) of the joint ridge problem on expanded features: the reference of the tests."""
    X = features.to(DTYPE)
    C = int(labels.max()) + 1 if num_classes is None else num_classes
    Y = torch.nn.functional.one_hot(labels.to(torch.int64), C).to(DTYPE)
    A = X.T @ X + gamma * torch.eye(X.shape[1], dtype=DTYPE)
    return torch.linalg.solve(A, X.T @ Y), torch.linalg.inv(A)
