"""RanPAC as a strategy: random-projection ridge classifier on the model's frozen features (closed form)."""

from __future__ import annotations

from lifelong.strategies.analytic import AnalyticStrategy, declared
from lifelong.strategies.base import register


@register
class RanPACStrategy(AnalyticStrategy):
    """RanPAC (McDonnell et al., NeurIPS 2023), as `lifelong.analytic.ranpac.RanPAC` on the run's features.

    Algorithm (per experience t, after the optional SGD base phase that stands in for the paper's first-session
    adaptation; then the backbone is frozen):
        f = backbone(x) for every training sample of t         (eval mode, no gradients)
        h = ReLU(f W_rand)                                       (W_rand ~ N(0,1), L x M, fixed)
        G += H^T H,  Q += H^T Y                                  (Y one-hot)
        lambda = argmin over 1e-8..1e8 of the held-out MSE on t (or the fixed `ridge`)
        W_o = (G + lambda I)^-1 Q;   predict argmax h W_o
    No SGD after the base phase (`learns_by_sgd` False), so the training cost is one forward pass over the
    data plus the M x M statistics. Deviations from the authors: see `lifelong.analytic.ranpac` (seeded
    held-out split, targets over classes seen so far, M=1024 by default instead of 10000, no PETL adapter:
    `base_experiences` trains the whole backbone by the engine's SGD instead).
    """

    name = "ranpac"
    kind = "ranpac"
    description = "random ReLU projection of frozen features + ridge classifier, lambda chosen per experience"
    params = declared("ranpac")
