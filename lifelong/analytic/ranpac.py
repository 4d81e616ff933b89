"""RanPAC (McDonnell et al., NeurIPS 2023): random projection of frozen features + ridge classifier.

    h = ReLU(f W_rand),  W_rand ~ N(0, 1)^(L x M)          (frozen, drawn once from `seed`)
    G = sum_t H_t^T H_t,  Q = sum_t H_t^T Y_t                (accumulated over experiences; Y one-hot)
    W_o = (G + lambda I)^-1 Q,  scores = h W_o

lambda: with `ridge=0` (the default, as the paper) it is chosen again at the end of every phase (experience)
from 10^-8 .. 10^8 by fitting on 80% of that phase's projected training rows and taking the value with the
least mean squared error on the other 20% (the authors' `optimise_ridge_parameter`); a positive `ridge` fixes it.
The Gram matrix G and Q are the accumulated statistics of every phase; only the choice of lambda uses the
current phase alone, as in the authors' code.

Deviations: the held-out 20% is a seeded random subset of the phase (the authors take the last 20% of a
shuffled loader); the one-hot targets of the validation span the classes learned so far (the authors': every
class of the dataset, with all-zero columns for future classes); the candidate solutions are computed from one
eigendecomposition of the 80% Gram matrix (the same values as solving each system, in one M^3 step), and
that Gram matrix is the phase's minus the held-out rows' (the phase's is already accumulated). The
paper's first-session parameter-efficient fine-tuning (Phase 1) is the strategy's `base_experiences` (SGD on
the first experiences) here; RanPAC's M=10000 is `projection_size` (state M x M float64: 1024 by default,
chosen by a sweep in docs/zoo/ranpac.md).
The statistics are kept exactly as ACIL's (`RecursiveRidge`), so samples can also be unlearned exactly.
Candidates whose solution float64 rounding would limit to worse than PRECISION_WARN relative (`rounding_floor`
of the accumulated G) are left out of the choice (the authors try every one); if none is left, the largest is
taken. A projection wider than the samples (projection_size=4096 on digits) otherwise chose 1e-8 and warned
that its weights were accurate only to about 5e-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifelong.analytic.acil import ACIL, PRECISION_WARN, STATE_FORMAT, RecursiveRidge, pad_columns, rounding_floor
from lifelong.analytic.base import DTYPE, SampleLedger, as_features, as_labels, check_square_state_fits
from lifelong.params import Param, resolve

RIDGES = tuple(10.0 ** k for k in range(-8, 9))  # the authors' candidates
VALIDATION = 0.2  # share of a phase's rows held out to choose lambda

RANPAC_PARAMS = {
    "projection_size": Param(1024, "M: width of the random ReLU projection (state is M x M float64)", low=1),
    "ridge": Param(0.0, "ridge lambda; 0: chosen per experience on 20% of its training rows from 1e-8..1e8 "
                   "(the paper's procedure)", low=0.0),
    "seed": Param(0, "seed of the random projection and of the held-out split", low=0),
    "chunk_size": Param(1024, "rows projected and absorbed per step (bounds temporary memory)", low=1),
}


class GaussianProjection:
    """Frozen random matrix W_rand (in_features x M) with N(0, 1) entries, as the authors' torch.randn."""

    def __init__(self, in_features: int, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed))
        self.weight = torch.randn(size, in_features, generator=g, dtype=DTYPE)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def choose_ridge(G_fit: torch.Tensor, Q_fit: torch.Tensor, H_val: torch.Tensor, Y_val: torch.Tensor,
                 candidates: Sequence[float] = RIDGES) -> float:
    """The candidate lambda whose ridge fit (G_fit + lambda I)^-1 Q_fit has the least mean squared error on the
    held-out rows (H_val, Y_val); every candidate from one eigendecomposition of G_fit."""
    evals, V = torch.linalg.eigh(G_fit)
    P = V.T @ Q_fit
    HV = H_val @ V
    losses = [float(((HV @ (P / (evals.clamp_min(0) + lam).unsqueeze(1)) - Y_val) ** 2).mean())
              for lam in candidates]
    return float(candidates[min(range(len(losses)), key=losses.__getitem__)])


class RanPAC(ACIL):
    """RanPAC's classifier on frozen features; `fit_increment` between `begin_phase`/`end_phase` calls gives
    one lambda per phase (a call outside a phase is a phase of its own)."""

    kind = "ranpac"
    PARAMS = RANPAC_PARAMS

    def __init__(self, in_features: int, **params: Any) -> None:
        self.configure(in_features, params)
        m = self.params["projection_size"]
        check_square_state_fits("projection_size", m, self._state_matrices)
        self.buffer = GaussianProjection(self.in_features, m, self.params["seed"])
        self.ridge = RecursiveRidge(m, self.params["ridge"] or 1.0, name="ridge")
        self.ledger = SampleLedger()
        self.phase: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.before = (self.ridge.G, self.ridge.B)
        self.phases = 0  # phases that chose a lambda (seeds the held-out split of the next one)

    @property
    def lam(self) -> float:
        """The lambda of the current solution."""
        return self.ridge.gamma

    def begin_phase(self) -> RanPAC:
        self.phase = []
        self.before = (self.ridge.G, self.ridge.B)
        return self

    def end_phase(self) -> RanPAC:
        rows, self.phase = self.phase or [], None
        if rows:
            self.select_ridge(torch.cat([x for x, _ in rows]), torch.cat([y for _, y in rows]), *self.before)
        return self

    def select_ridge(self, x: torch.Tensor, y: torch.Tensor, G0: torch.Tensor, B0: torch.Tensor) -> None:
        """Choose lambda on the phase's rows x, y (unless `ridge` fixes it); G0, B0: the statistics before the
        phase, so the phase's own Gram matrix is the difference (not recomputed). The statistics are unchanged."""
        if self.params["ridge"] > 0:
            return
        n = x.shape[0]
        n_val = int(round(VALIDATION * n))
        if n_val == 0 or n_val == n:
            return
        g = torch.Generator().manual_seed(int(self.params["seed"]) * 1_000_003 + self.phases)
        self.phases += 1
        val = torch.randperm(n, generator=g)[:n_val]
        C = self.ridge.num_outputs
        H_val = torch.relu(self.buffer(x[val]))
        Y_val = self.ridge.one_hot(y[val], C)
        G_fit = self.ridge.G - G0 - H_val.T @ H_val
        Q_fit = self.ridge.B - pad_columns(B0, C) - H_val.T @ Y_val
        accurate = [lam for lam in RIDGES if rounding_floor(self.ridge.G, lam) <= PRECISION_WARN] or [RIDGES[-1]]
        self.ridge.gamma = choose_ridge(G_fit, Q_fit, H_val, Y_val, accurate)
        self.ridge.assign(self.ridge.G, self.ridge.B)  # drop the cached factor and weights

    def fit_increment(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> RanPAC:
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        G0, B0 = self.ridge.G, self.ridge.B
        super().fit_increment(x, y, sample_ids)
        if x.shape[0]:
            if self.phase is None:
                self.select_ridge(x, y, G0, B0)
            else:
                self.phase.append((x, y))
        return self

    def state_dict(self) -> dict:
        return {**self.state_header(), "format": STATE_FORMAT, "buffer_weight": self.buffer.weight,
                "G": self.ridge.G, "B": self.ridge.B, "lambda": self.ridge.gamma, "phases": self.phases,
                "ledger": self.ledger.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> RanPAC:
        m = cls.__new__(cls)
        m.params = resolve(cls.PARAMS, state["params"], cls.kind)
        m.in_features = int(state["in_features"])
        m.buffer = GaussianProjection.__new__(GaussianProjection)
        m.buffer.weight = state["buffer_weight"].to(DTYPE)
        m.ridge = RecursiveRidge.from_stats(state["G"], state["B"], float(state["lambda"]), "ridge")
        m.ledger = SampleLedger.from_state_dict(state["ledger"])
        m.phase, m.phases = None, int(state["phases"])
        m.before = (m.ridge.G, m.ridge.B)
        return m

