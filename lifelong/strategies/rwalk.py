"""Riemannian Walk (RWalk; Chaudhry, Dokania, Ajanthan & Torr, ECCV 2018): EWC++ Fisher plus a path-integral
score normalised by the KL distance the parameters travelled.

With g the gradient of the task loss alone (no penalty) and delta the change the optimizer made, during training:

    every step:             w_i += -g_i delta_i            F_tmp_i += g_i^2
    every K steps (EWC++):  F <- alpha * F_tmp / K + (1 - alpha) * F        (F_tmp <- 0)
                            s_t,i += max(0, w_i / (1/2 F_i (theta_i - theta_K,i)^2 + xi))   (w <- 0, theta_K <- theta)
    end of experience t:    s <- s_t (first experience), (s + s_t) / 2 afterwards;  s_t <- 0
                            F^ = min-max normalised F,  s^ = min-max normalised s  (over all parameters)
                            anchor theta* <- theta
    penalty:                lambda * sum_i (F^_i + s^_i) (theta_i - theta*_i)^2

Defaults alpha = 0.9 and K = 50 and xi = 1e-3 are the authors' (facebookresearch/agem: FISHER_EMA_DECAY,
FISHER_UPDATE_AFTER, PARAM_XI_STEP). The running Fisher carries over experiences, as theirs does.

Deviations from the authors' code: (1) the score denominator has the paper's 1/2 (their code drops it); (2) F is
updated before the score of an interval is computed, so the first interval already has a Fisher (their running
Fisher starts at zero, dividing the first interval by xi alone); (3) F_tmp is reset after every update, so each
update averages the K steps since the last one (their tmp Fisher is reset only at task ends but still divided by
K); (4) the scores are averaged, s <- (s + s_t)/2, as the paper says (their code adds the average to s); (5) a
partial last interval of an experience is flushed at its end. F is the
squared mini-batch gradient (EWC++'s empirical Fisher), not a per-sample Fisher.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, register
from lifelong.strategies.regularization import QuadraticAnchor
from lifelong.strategies.si import PathSteps

EPSILON = 1e-8


def minmax(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """(x - min) / (max - min + eps) with one min and max over all tensors, as the authors normalise."""
    lo = min(float(v.min()) for v in tensors.values())
    hi = max(float(v.max()) for v in tensors.values())
    return {k: (v - lo) / (hi - lo + EPSILON) for k, v in tensors.items()}


def riemannian_score(w: Tensor, fisher: Tensor, delta: Tensor, xi: float) -> Tensor:
    """One interval's score: max(0, w / (1/2 F delta^2 + xi))."""
    return torch.relu(w / (0.5 * fisher * delta.pow(2) + xi))


@register
class RWalk(QuadraticAnchor):
    name = "rwalk"
    description = "riemannian walk: EWC++ Fisher plus a KL-normalised path-integral score"
    params = {
        "rwalk_lambda": Param(1.0, "penalty strength lambda", low=0.0),
        "alpha": Param(0.9, "EWC++ moving-average weight of the new Fisher (authors: 0.9)", low=0.0, high=1.0),
        "update_every": Param(50, "steps K between Fisher and score updates (authors: 50)", low=1),
        "xi": Param(1e-3, "damping xi of the score denominator", low=0.0, low_open=True),
    }
    neutral = {"rwalk_lambda": 0.0}
    strength_param = "rwalk_lambda"
    penalty_scale = 1.0
    separate_gradients = True

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.fisher: dict[str, Tensor] = {}
        self.fisher_tmp: dict[str, Tensor] = {}
        self.w: dict[str, Tensor] = {}
        self.score_t: dict[str, Tensor] = {}
        self.score: dict[str, Tensor] = {}
        self.mark: dict[str, Tensor] = {}  # theta at the last interval's end
        self.steps = 0
        self.experiences = 0
        self.path = PathSteps()

    def begin_experience(self, exp: Experience) -> None:
        if not self.mark:
            zeros = {k: torch.zeros_like(v) for k, v in self.snapshot().items()}
            self.fisher = {k: v.clone() for k, v in zeros.items()}
            self.score = {k: v.clone() for k, v in zeros.items()}
            self.mark = self.snapshot()
        self.fisher_tmp = {k: torch.zeros_like(v) for k, v in self.fisher.items()}
        self.w = {k: torch.zeros_like(v) for k, v in self.fisher.items()}
        self.score_t = {k: torch.zeros_like(v) for k, v in self.fisher.items()}
        self.steps = 0

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        if self.strength != 0.0:
            self.path.record(self.ctx.model, grads)

    def after_step(self, batch: Batch, out: Outputs) -> None:
        steps = self.path.take()
        if not steps:
            return
        for name, g, delta in steps:
            self.w[name].sub_(g * delta)
            self.fisher_tmp[name].add_(g.pow(2))
        self.steps += 1
        if self.steps % self.hp["update_every"] == 0:
            self.update_interval(self.hp["update_every"])

    def update_interval(self, steps: int) -> None:
        a, xi = self.hp["alpha"], self.hp["xi"]
        now = self.snapshot()
        for k in self.fisher:
            self.fisher[k] = a * self.fisher_tmp[k] / steps + (1 - a) * self.fisher[k]
            self.score_t[k] += riemannian_score(self.w[k], self.fisher[k], now[k] - self.mark[k], xi)
            self.fisher_tmp[k].zero_()
            self.w[k].zero_()
        self.mark = now

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        rest = self.steps % self.hp["update_every"]
        if rest:
            self.update_interval(rest)
        first = self.experiences == 0
        self.score = {k: v.clone() if first else (self.score[k] + v) / 2 for k, v in self.score_t.items()}
        self.experiences += 1
        f_hat, s_hat = minmax(self.fisher), minmax(self.score)
        self.importances = [{k: f_hat[k] + s_hat[k] for k in f_hat}]
        self.anchors = [self.snapshot()]
        self.consolidate()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher": self.fisher, "fisher_tmp": self.fisher_tmp, "w": self.w,
                "score_t": self.score_t, "score": self.score, "mark": self.mark, "steps": self.steps,
                "experiences": self.experiences}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key in ("fisher", "fisher_tmp", "w", "score_t", "score", "mark", "steps", "experiences"):
            setattr(self, key, state[key])
