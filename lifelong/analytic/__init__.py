"""Pretrained-feature and closed-form (analytic) continual learning, with exact unlearning (ACU).

Learners on frozen features share one interface: `fit_increment(features, labels, sample_ids=None)`,
`predict(features)`, `decision_function(features)`, `unlearn(features, labels, sample_ids=None)`,
`unlearn_classes(classes, features, labels, sample_ids=None)`, `state_nbytes`, `state_dict()` /
`from_state_dict()`. Build one by name with `make_analytic("acil", in_features, gamma=1.0, ...)`.
"""

from __future__ import annotations

from typing import Any

from lifelong.analytic.acil import ACIL, GACIL, RandomBuffer, RecursiveRidge, ridge_solution
from lifelong.analytic.base import AnalyticModel, SampleLedger
from lifelong.analytic.dsal import DSAL
from lifelong.analytic.nmc import NMC
from lifelong.analytic.prototypes import Prototypes
from lifelong.analytic.ranpac import RanPAC
from lifelong.analytic.slca import ClassAlignment
from lifelong.registry import Registry

ANALYTIC: Registry[type] = Registry("analytic method")
for _cls in (NMC, ACIL, GACIL, DSAL, RanPAC, Prototypes):
    ANALYTIC.add(_cls.kind, _cls)


def make_analytic(name: str, in_features: int, **params: Any) -> AnalyticModel:
    """An analytic learner on `in_features`-dimensional frozen features, hyperparameters checked."""
    return ANALYTIC.get(name)(in_features, **params)


__all__ = [
    "ACIL", "ANALYTIC", "DSAL", "GACIL", "NMC", "AnalyticModel", "ClassAlignment", "Prototypes", "RandomBuffer",
    "RanPAC", "RecursiveRidge", "SampleLedger", "make_analytic", "ridge_solution",
]  # fmt: skip
