"""DS-AL: dual-stream analytic learning (Zhuang et al., AAAI 2024).

One frozen random linear projection P = B f shared by two ridge streams:
  main stream         X_m = ReLU(P), the ACIL classifier (exact joint ridge solution);
  compensation stream X_c = Tanh(P), fitted on each phase k to the main stream's residual
                      Y_k - X_m,k W_m^(k) (W_m^(k): the main stream after phase k), with "previous label
                      cleansing": residual columns of classes learned in earlier phases are zeroed.
Prediction: X_m W_m + C * X_c W_c (C = compensation ratio).

Phases. Cleansing and the residual are defined per phase, so a phase may be fed in mini-batches:
    model.begin_phase()
    for xb, yb in batches_of_this_phase:
        model.fit_increment(xb, yb)
    model.end_phase()            # optional: the next begin_phase() also closes the open phase
gives the same model as one `fit_increment` call with the whole phase. Without `begin_phase()`, each
`fit_increment` call is a phase by itself (the behaviour of earlier versions). While a phase is open,
predictions use the compensation stream as if the phase ended now.

Implementation: both streams keep float64 sufficient statistics (see acil.RecursiveRidge); an open phase also
keeps H = sum X_c^T X_m and P = sum X_c^T Y over its mini-batches, so that on closing it adds
(P - H W_m^(k)) with old-class columns zeroed = X_c^T (cleansed residual) to the compensation stream without
storing any sample. This follows the paper's phase-level equations. The authors' code (analytic/DSAL.py,
`fit(X, y, increase_size)`, called per mini-batch by their learner) computes each mini-batch's residual against
the main stream after that mini-batch instead; for a phase given as one batch it is the same model as this one
(cleansed columns there: all but the last `increase_size`, i.e. the phase's classes in their class order).

The compensation stream depends on the learning history, so DS-AL is not order-invariant as a whole and does
not support exact unlearning (use ACIL / G-ACIL for that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifelong.analytic.acil import STATE_FORMAT, RandomBuffer, RecursiveRidge, pad_columns
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

DSAL_PARAMS = {
    "buffer_size": Param(2048, "width d_B of the shared random projection (two d_B x d_B float64 states)", low=1),
    "gamma": Param(0.1, "ridge regulariser of the main stream", low=0.0, low_open=True),
    "gamma_comp": Param(0.1, "ridge regulariser of the compensation stream", low=0.0, low_open=True),
    "compensation_ratio": Param(1.0, "weight C of the compensation stream at prediction", low=0.0),
    "seed": Param(0, "seed of the random projection", low=0),
    "chunk_size": Param(1024, "rows expanded and absorbed per step (bounds temporary memory)", low=1),
}


class DSAL(AnalyticModel):
    """DS-AL on frozen features; see the module docstring for phases (`begin_phase` / `end_phase`)."""

    kind = "ds-al"
    PARAMS = DSAL_PARAMS
    supports_unlearning = False

    def __init__(self, in_features: int, **params: Any) -> None:
        self.configure(in_features, params)
        d = self.params["buffer_size"]
        check_square_state_fits("buffer_size", d, 7)  # G_m, G_c, H, two factors, update temporaries
        self.buffer = RandomBuffer(self.in_features, d, self.params["seed"])
        self.main = RecursiveRidge(d, self.params["gamma"])
        self.comp = RecursiveRidge(d, self.params["gamma_comp"], name="gamma_comp")  # closed phases' residuals
        self.ledger = SampleLedger()
        self._reset_phase()

    def _reset_phase(self) -> None:
        self.phase_open = False
        self.phase_known: list[int] = []  # classes learned before the open phase (cleansed)
        self.phase_H: torch.Tensor | None = None  # sum X_c^T X_m over the open phase
        self.phase_P: torch.Tensor | None = None  # sum X_c^T Y over the open phase
        self._Wc: torch.Tensor | None = None

    @property
    def state_nbytes(self) -> int:
        extra = sum(t.numel() * 8 for t in (self.phase_H, self.phase_P) if t is not None)
        return self.main.nbytes + self.comp.nbytes + self.buffer.weight.numel() * 8 + extra

    # ----------------------------------------------------------------- phases
    def begin_phase(self) -> DSAL:
        """Start a phase: the following `fit_increment` calls are its mini-batches (closes an open phase)."""
        self.end_phase()
        d = self.main.G.shape[0]
        self.phase_open = True
        self.phase_known = sorted(self.ledger.class_counts)
        self.phase_H = torch.zeros(d, d, dtype=DTYPE)
        self.phase_P = torch.zeros(d, 0, dtype=DTYPE)
        return self

    def end_phase(self) -> DSAL:
        """Close the open phase: add its cleansed residual to the compensation stream (no-op if none is open)."""
        if self.phase_open:
            B = self._comp_rhs()
            self.comp.assign(self.comp.G, B)
            self._reset_phase()
        return self

    def _comp_rhs(self) -> torch.Tensor:
        """Compensation right-hand side: closed phases plus the open phase as if it ended now."""
        Wm = self.main.W
        B = pad_columns(self.comp.B, Wm.shape[1])
        if not self.phase_open:
            return B
        res = pad_columns(self.phase_P, Wm.shape[1]) - self.phase_H @ Wm  # X_c^T (Y - X_m W_m)
        res[:, [c for c in self.phase_known if c < res.shape[1]]] = 0  # previous label cleansing
        return B + res

    # ----------------------------------------------------------------- learning
    def fit_increment(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> DSAL:
        """Learn a batch: a mini-batch of the open phase, or (no phase open) a whole phase by itself."""
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        if x.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(x, y, sample_ids)
        self.ledger.check_add(ids, y.tolist(), digests)
        whole_phase = not self.phase_open
        if whole_phase:
            self.begin_phase()
        C = max(self.main.num_outputs, int(y.max()) + 1)
        Gm, Bm, Gc, H, P = None, None, self.comp.G, self.phase_H, pad_columns(self.phase_P, C)
        chunk = self.params["chunk_size"]
        for s in range(0, x.shape[0], chunk):
            proj = self.buffer(x[s : s + chunk])
            Xm, Xc = torch.relu(proj), torch.tanh(proj)
            Y = self.main.one_hot(y[s : s + chunk], C)
            Gm, Bm = self.main.accumulated(Xm, Y, +1, Gm, Bm)
            Gc = torch.addmm(Gc, Xc.T, Xc)
            H = torch.addmm(H, Xc.T, Xm)
            P = torch.addmm(P, Xc.T, Y)
        self.main.assign(Gm, Bm)
        self.comp.assign(Gc, pad_columns(self.comp.B, C))
        self.phase_H, self.phase_P, self._Wc = H, P, None
        self.ledger.add(ids, y.tolist(), digests)
        if whole_phase:
            self.end_phase()
        return self

    @property
    def comp_W(self) -> torch.Tensor:
        """Weights of the compensation stream (including the open phase as if it ended now)."""
        if not self.phase_open:
            return self.comp.W
        if self._Wc is None:
            self._Wc = self.comp.solve(self._comp_rhs())
        return self._Wc

    def decision_function(self, features: Any) -> torch.Tensor:
        P = self.buffer(as_features(features, self.in_features))
        Wm = self.main.W
        Wc = pad_columns(self.comp_W, Wm.shape[1])
        s = torch.relu(P) @ Wm + self.params["compensation_ratio"] * (torch.tanh(P) @ Wc)
        return self._mask_unlearned(s)

    def unlearn(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> DSAL:
        raise LifelongError(
            "ds-al does not support exact unlearning (its compensation stream depends on the learning "
            "history); use acil or g-acil"
        )

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """Tensors, numbers, strings, lists and dicts only (loads with torch.load(weights_only=True))."""
        empty = torch.zeros(0, 0, dtype=DTYPE)
        return {
            **self.state_header(),
            "format": STATE_FORMAT,
            "buffer_weight": self.buffer.weight,
            "G_main": self.main.G,
            "B_main": self.main.B,
            "G_comp": self.comp.G,
            "B_comp": self.comp.B,
            "phase_open": self.phase_open,
            "phase_known": torch.tensor(self.phase_known, dtype=torch.int64),
            "phase_H": self.phase_H if self.phase_open else empty,
            "phase_P": self.phase_P if self.phase_open else empty,
            "ledger": self.ledger.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> DSAL:
        m = cls.__new__(cls)
        m.params = resolve(cls.PARAMS, state["params"], cls.kind)
        m.in_features = int(state["in_features"])
        m.buffer = RandomBuffer.__new__(RandomBuffer)
        m.buffer.weight = state["buffer_weight"].to(DTYPE)
        gm, gc = m.params["gamma"], m.params["gamma_comp"]
        m._reset_phase()
        if "G_main" in state:
            m.main = RecursiveRidge.from_stats(state["G_main"], state["B_main"], gm)
            m.comp = RecursiveRidge.from_stats(state["G_comp"], state["B_comp"], gc, "gamma_comp")
            if state["phase_open"]:
                m.phase_open = True
                m.phase_known = [int(c) for c in state["phase_known"].tolist()]
                m.phase_H, m.phase_P = state["phase_H"].to(DTYPE), state["phase_P"].to(DTYPE)
        else:  # format 1: inverses and weights of the Woodbury recursion
            m.main = RecursiveRidge.from_inverse(state["R_main"], state["W_main"], gm)
            m.comp = RecursiveRidge.from_inverse(state["R_comp"], state["W_comp"], gc)
        m.ledger = SampleLedger.from_state_dict(state["ledger"])
        return m
