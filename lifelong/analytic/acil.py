"""ACIL / G-ACIL (analytic class-incremental learning) with exact ACU unlearning.

Frozen features f -> random frozen buffer phi = ReLU(B f) -> ridge classifier
    W = (G + gamma I)^-1 B,   G = sum X^T X,   B = sum X^T Y     (X = phi rows, Y = one-hot labels)
on whatever is currently learned, whatever the phase split, batch size or class order. Columns of W are
indexed by the class label. See docs: methods.md section 3.

Implementation (a deviation from the authors' code in form only, same weights): the authors keep the
regularised inverse R = (G + gamma I)^-1 and update it by the Woodbury identity (ACIL eqs. 9-10, the G-ACIL
mini-batch form), and ACU unlearning downdates it with the opposite sign. With a buffer wider than the
samples and a small gamma, R is huge and ill-conditioned, and a downdate amplifies its rounding error (measured:
unlearned W off retraining by 1.5e-2 at gamma=1e-5, spurious refusals at 1e-8). Here the float64 sufficient
statistics G and B are kept instead, so learning adds X^T X and X^T Y and unlearning subtracts them exactly
as learned; W is solved by a Cholesky factorisation of G + gamma I when needed (cached until the statistics
change). Whether a sample may be unlearned is decided by the sample ledger only, never by floating point; a
system that is numerically singular (gamma far below the rounding error of G) is refused with a clear line.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
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
    "gamma": Param(0.1, "ridge regulariser gamma (W = (X^T X + gamma I)^-1 X^T Y)", low=0.0, low_open=True),
    "seed": Param(0, "seed of the random buffer weights", low=0),
    "chunk_size": Param(1024, "rows expanded and absorbed per step (bounds temporary memory)", low=1),
}

PRECISION_WARN = 1e-6  # solving warns when the estimated relative rounding error of W exceeds this
STATE_FORMAT = 2  # 1: inverse R and W (Woodbury recursion); 2: sufficient statistics G and B


class RandomBuffer:
    """Frozen random linear map B (buffer_size x in_features), PyTorch's default Linear init, no bias."""

    def __init__(self, in_features: int, buffer_size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(in_features)
        self.weight = (torch.rand(buffer_size, in_features, generator=g, dtype=DTYPE) * 2 - 1) * bound

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def pad_columns(M: torch.Tensor, cols: int) -> torch.Tensor:
    """M with zero columns appended up to `cols` columns (M itself when it has enough)."""
    if M.shape[1] >= cols:
        return M
    return torch.cat([M, M.new_zeros(M.shape[0], cols - M.shape[1])], 1)


def rounding_floor(G: torch.Tensor, gamma: float) -> float:
    """eps * trace(G) / gamma: about the relative error float64 rounding of G = sum X^T X puts on W.

    Forming G rounds it by about eps * |G|; with a buffer wider than the samples that error reaches W amplified
    by 1/gamma in the directions no sample spans. Retraining from scratch has the same floor.
    """
    return float(torch.finfo(DTYPE).eps * G.diagonal().sum().clamp_min(0) / gamma)


class RecursiveRidge:
    """A ridge regression kept as float64 sufficient statistics G = sum X^T X (dim x dim), B = sum X^T Y.

    `W` = (G + gamma I)^-1 B and `R` = (G + gamma I)^-1 are computed from a Cholesky factor on request and cached
    until `assign` changes the statistics. Learning in any split or order gives the same G and B up to
    float64 summation rounding, and removing samples subtracts what adding them added.
    """

    def __init__(self, dim: int, gamma: float, name: str = "gamma") -> None:
        self.gamma = float(gamma)
        self.name = name  # the method's own name for the ridge strength, in messages
        self.G = torch.zeros(dim, dim, dtype=DTYPE)
        self.B = torch.zeros(dim, 0, dtype=DTYPE)
        self._L: torch.Tensor | None = None
        self._W: torch.Tensor | None = None

    @classmethod
    def from_stats(cls, G: torch.Tensor, B: torch.Tensor, gamma: float, name: str = "gamma") -> RecursiveRidge:
        r = cls.__new__(cls)
        r.gamma, r.name, r._L, r._W = float(gamma), name, None, None
        r.G, r.B = G.to(DTYPE), B.to(DTYPE)
        return r

    @classmethod
    def from_inverse(cls, R: torch.Tensor, W: torch.Tensor, gamma: float) -> RecursiveRidge:
        """From a format-1 state (R = (G + gamma I)^-1, W = R B), as saved before format 2."""
        R, W = R.to(DTYPE), W.to(DTYPE)
        L, info = torch.linalg.cholesky_ex((R + R.T) / 2)
        if int(info) != 0:
            raise LifelongError("the saved model's matrix R is not positive definite; the file is damaged")
        A = torch.cholesky_inverse(L)
        G = (A + A.T) / 2 - gamma * torch.eye(R.shape[0], dtype=DTYPE)
        return cls.from_stats(G, A @ W, gamma)

    @property
    def nbytes(self) -> int:
        """Bytes of the state G and B (the cached factor and W are derived and not counted)."""
        return self.G.numel() * 8 + self.B.numel() * 8

    @property
    def num_outputs(self) -> int:
        return self.B.shape[1]

    def one_hot(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(y, num_classes).to(DTYPE)

    def accumulated(
        self, X: torch.Tensor, Y: torch.Tensor, sign: int, G: torch.Tensor | None = None, B: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (G, B) after adding (sign=+1) or removing (sign=-1) rows X with targets Y; inputs unchanged.

        `G`, `B` default to this ridge's statistics; pass the result of a previous call to continue a batch.
        """
        G = self.G if G is None else G
        B = pad_columns(self.B if B is None else B, Y.shape[1])
        Y = pad_columns(Y, B.shape[1])
        return torch.addmm(G, X.T, X, alpha=sign), torch.addmm(B, X.T, Y, alpha=sign)

    def factor(self, G: torch.Tensor | None = None) -> torch.Tensor:
        """Lower Cholesky factor of G + gamma I (of this ridge's G by default).

        Refuses with a clear line when G + gamma I is numerically singular (for a candidate G: nothing is
        changed); warns when float64 rounding limits W to worse than PRECISION_WARN relative (see
        `rounding_floor`).
        """
        own = G is None
        if own and self._L is not None:
            return self._L
        G = self.G if own else G
        floor = rounding_floor(G, self.gamma)
        L, info = torch.linalg.cholesky_ex(G + self.gamma * torch.eye(G.shape[0], dtype=DTYPE))
        if int(info) != 0:
            raise LifelongError(
                f"the ridge system is numerically singular: {self.name}={self.gamma:g} is below the float64 rounding "
                f"error of X^T X (trace {float(G.diagonal().sum()):.3g}); "
                + (f"rebuild the model with a larger {self.name}" if own else "nothing was changed")
                + f" ({self.name} >= {floor * self.gamma / PRECISION_WARN:.0e} gives weights accurate to "
                f"{PRECISION_WARN:g})"
            )
        if floor > PRECISION_WARN:
            warnings.warn(
                f"{self.name}={self.gamma:g} is small for features of this scale: the ridge weights (learned, "
                f"unlearned or retrained alike) are accurate only to about {floor:.0e} relative (float64 "
                f"rounding of X^T X amplified by 1/{self.name}); a larger {self.name} is more accurate",
                RuntimeWarning,
                stacklevel=3,
            )
        if own:
            self._L = L
        return L

    def assign(self, G: torch.Tensor, B: torch.Tensor, L: torch.Tensor | None = None) -> None:
        """Replace the statistics (L: an already computed factor of G + gamma I, else computed on demand)."""
        self.G, self.B, self._L, self._W = G, B, L, None

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """(G + gamma I)^-1 rhs."""
        if rhs.shape[1] == 0:
            return rhs.clone()
        return torch.cholesky_solve(rhs, self.factor())

    @property
    def W(self) -> torch.Tensor:
        """The ridge weights (G + gamma I)^-1 B, dim x outputs."""
        if self._W is None:
            self._W = self.solve(self.B)
        return self._W

    @property
    def rounding_floor(self) -> float:
        """Estimated relative error of W from float64 rounding of G (see `rounding_floor`)."""
        return rounding_floor(self.G, self.gamma)

    @property
    def R(self) -> torch.Tensor:
        """The regularised inverse (G + gamma I)^-1 of the authors' recursion (computed on request)."""
        return torch.cholesky_inverse(self.factor())


class ACIL(AnalyticModel):
    """ACIL: class-incremental analytic learning on frozen features (exemplar-free, joint ridge solution).

    `fit_increment` may be called with any split of the data (phases, mini-batches, any class order); the
    result is the joint ridge solution on everything learned. `unlearn` removes samples exactly (ACU) using
    only them. State (`state_dict`): the buffer weights, G = sum X^T X, B = sum X^T Y and the sample ledger.
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

    _state_matrices = 4  # G, its update, the Cholesky factor and the factor of the update

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
    def precision_floor(self) -> float:
        """Estimated relative float64 error of W (of retraining and unlearning alike); see RecursiveRidge."""
        return self.ridge.rounding_floor

    @property
    def state_nbytes(self) -> int:
        """Bytes of the learned state: d_B x d_B G, d_B x C B and the random buffer."""
        return self.ridge.nbytes + self.buffer.weight.numel() * 8

    def _statistics(self, x: torch.Tensor, y: torch.Tensor, sign: int, num_classes: int):
        """(G, B) with the rows x (expanded chunk by chunk) added or removed; the model is unchanged."""
        G, B = None, None
        chunk = self.params["chunk_size"]
        for s in range(0, x.shape[0], chunk):
            X = torch.relu(self.buffer(x[s : s + chunk]))
            G, B = self.ridge.accumulated(X, self.ridge.one_hot(y[s : s + chunk], num_classes), sign, G, B)
        return G, B

    # ----------------------------------------------------------------- learning
    def fit_increment(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> ACIL:
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        if x.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(x, y, sample_ids)
        self.ledger.check_add(ids, y.tolist(), digests)
        C = max(self.ridge.num_outputs, int(y.max()) + 1)
        self.ridge.assign(*self._statistics(x, y, +1, C))
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
        G, B = self._statistics(x, y, -1, self.ridge.num_outputs)
        removed = Counter(y.tolist())
        if len(self.ledger) == len(ids):  # nothing left: the statistics are exactly zero
            G, B = torch.zeros_like(G), torch.zeros_like(B)
        for c, k in removed.items():
            if self.ledger.class_counts[c] == k:  # no data of c left: its column is exactly zero
                B[:, c] = 0
        L = self.ridge.factor(G)  # raises (nothing changed) if the result cannot be solved
        self.ridge.assign(G, B, L)
        self.ledger.remove(ids)
        return self

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """Tensors, numbers, strings, lists and dicts only (loads with torch.load(weights_only=True))."""
        return {
            **self.state_header(),
            "format": STATE_FORMAT,
            "buffer_weight": self.buffer.weight,
            "G": self.ridge.G,
            "B": self.ridge.B,
            "ledger": self.ledger.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ACIL:
        m = cls.__new__(cls)
        m.params = resolve(cls.PARAMS, state["params"], cls.kind)
        m.in_features = int(state["in_features"])
        m.buffer = RandomBuffer.__new__(RandomBuffer)
        m.buffer.weight = state["buffer_weight"].to(DTYPE)
        gamma = m.params["gamma"]
        if "G" in state:
            m.ridge = RecursiveRidge.from_stats(state["G"], state["B"], gamma)
        else:
            m.ridge = RecursiveRidge.from_inverse(state["R"], state["W"], gamma)
        m.ledger = SampleLedger.from_state_dict(state["ledger"])
        return m


class GACIL(ACIL):
    """G-ACIL: generalised CIL — classes re-appear, phases mix old and new classes, data come in mini-batches.

    The solution is the same as ACIL's (the paper's result is that the recursion stays equal to the joint
    solution when a batch mixes exposed and unexposed classes); this class exists so runs record the protocol.
    """

    kind = "g-acil"


def ridge_solution(features: torch.Tensor, labels: torch.Tensor, gamma: float, num_classes: int | None = None):
    """(W, R) of the joint ridge problem on expanded features: the reference of the tests."""
    X = features.to(DTYPE)
    C = int(labels.max()) + 1 if num_classes is None else num_classes
    Y = torch.nn.functional.one_hot(labels.to(torch.int64), C).to(DTYPE)
    A = X.T @ X + gamma * torch.eye(X.shape[1], dtype=DTYPE)
    return torch.linalg.solve(A, X.T @ Y), torch.linalg.inv(A)
