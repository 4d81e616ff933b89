"""DS-AL: dual-stream analytic learning (Zhuang et al., AAAI 2024).

One frozen random linear projection P = B f shared by two recursive ridge streams:
  main stream         X_m = ReLU(P), the ACIL classifier (exact joint ridge solution);
  compensation stream X_c = Tanh(P), fitted to the main stream's residual Y - X_m W_m on each phase,
                      with "previous label cleansing": residual columns of classes learned in earlier
                      phases are zeroed.
Prediction: X_m W_m + C * X_c W_c (C = compensation ratio).

Call `fit_increment` once per phase (experience): the set of new classes of a call defines the cleansing.
The compensation stream depends on the learning history, so DS-AL is not order-invariant as a whole and does
not support exact unlearning (use ACIL / G-ACIL for that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lifelong.analytic.acil import RandomBuffer, RecursiveRidge
from lifelong.analytic.base import (
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
    "chunk_size": Param(1024, "rows absorbed per recursive step", low=1),
}


class DSAL(AnalyticModel):
    kind = "ds-al"
    PARAMS = DSAL_PARAMS
    supports_unlearning = False

    def __init__(self, in_features: int, **params: Any) -> None:
        self.configure(in_features, params)
        d = self.params["buffer_size"]
        check_square_state_fits("buffer_size", d, 4)
        self.buffer = RandomBuffer(self.in_features, d, self.params["seed"])
        self.main = RecursiveRidge(d, self.params["gamma"])
        self.comp = RecursiveRidge(d, self.params["gamma_comp"])
        self.ledger = SampleLedger()

    @property
    def state_nbytes(self) -> int:
        return self.main.nbytes + self.comp.nbytes + self.buffer.weight.numel() * 8

    def fit_increment(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> DSAL:
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        if x.shape[0] == 0:
            return self
        ids, digests = self.ledger.keys_for(x, y, sample_ids)
        self.ledger.check_add(ids, y.tolist(), digests)
        known = set(self.ledger.class_counts)
        P = self.buffer(x)
        Xm, Xc = torch.relu(P), torch.tanh(P)
        C = max(self.main.W.shape[1], int(y.max()) + 1)
        chunk = self.params["chunk_size"]
        Y = self.main.one_hot(y, C)
        self.main.R, self.main.W = self.main.updated(Xm, Y, +1, chunk)
        residual = Y - Xm @ self.main.W
        old = [c for c in range(C) if c in known]
        residual[:, old] = 0  # previous label cleansing
        self.comp.R, self.comp.W = self.comp.updated(Xc, residual, +1, chunk)
        self.ledger.add(ids, y.tolist(), digests)
        return self

    def decision_function(self, features: Any) -> torch.Tensor:
        P = self.buffer(as_features(features, self.in_features))
        Wc = self.comp.W
        if Wc.shape[1] < self.main.W.shape[1]:
            Wc = torch.cat([Wc, Wc.new_zeros(Wc.shape[0], self.main.W.shape[1] - Wc.shape[1])], 1)
        s = torch.relu(P) @ self.main.W + self.params["compensation_ratio"] * (torch.tanh(P) @ Wc)
        return self._mask_unlearned(s)

    def unlearn(self, features: Any, labels: Any, sample_ids: Sequence | None = None) -> DSAL:
        raise LifelongError(
            "ds-al does not support exact unlearning (its compensation stream depends on the learning "
            "history); use acil or g-acil"
        )

    def state_dict(self) -> dict:
        return {
            **self.state_header(),
            "buffer_weight": self.buffer.weight,
            "R_main": self.main.R,
            "W_main": self.main.W,
            "R_comp": self.comp.R,
            "W_comp": self.comp.W,
            "ledger": self.ledger.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> DSAL:
        m = cls.__new__(cls)
        m.params = resolve(cls.PARAMS, state["params"], cls.kind)
        m.in_features = int(state["in_features"])
        m.buffer = RandomBuffer.__new__(RandomBuffer)
        m.buffer.weight = state["buffer_weight"]
        m.main = RecursiveRidge.__new__(RecursiveRidge)
        m.comp = RecursiveRidge.__new__(RecursiveRidge)
        m.main.R, m.main.W = state["R_main"], state["W_main"]
        m.comp.R, m.comp.W = state["R_comp"], state["W_comp"]
        m.ledger = SampleLedger.from_state_dict(state["ledger"])
        return m
