"""The "infinite" schedule: warmup, cooldown, constant, exponential annealing (Ibrahim et al.; Singh et al.).

Made for open-ended continual pre-training: only the first experience warms up and cools down; later
experiences train at the constant rate and anneal only when a deployable model is wanted (see StreamSchedule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from lifelong.params import Param
from lifelong.schedules.base import Schedule, need, peak_param, warmup_param, warmup_value

COOLDOWN_SHAPES = ("cosine", "inverse-sqrt", "linear")


def anneal(step: int, start: int, end: int, constant: float, min_lr: float) -> float:
    """Exponential annealing from `constant` at `start` to `min_lr` at `end` (held afterwards)."""
    if step <= start:
        return constant
    if step >= end:
        return min_lr
    return constant * (min_lr / constant) ** ((step - start) / (end - start))


@dataclass(frozen=True)
class Infinite(Schedule):
    """Infinite schedule: warmup, cooldown to the constant rate, constant, exponential anneal to min-lr.

    Phases (t = step): warmup 0 <= t <= W: peak·t/W; cooldown W < t <= E: f(u), u = (t-W)/(E-W);
    constant E < t <= K; annealing K < t <= total: constant·(min_lr/constant)^((t-K)/(total-K)).
    Cooldown shapes: cosine, linear, and inverse-sqrt with h(u) = 1/sqrt(1 + timescale·u) - 1,
    f(u) = peak + (constant - peak)·h(u)/h(1). Continuous at every phase boundary.
    """

    name: ClassVar[str] = "infinite"
    run_length_fields: ClassVar[tuple[str, ...]] = ("total",)
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "constant": Param(
            5e-4, "rate of the constant phase (reached at cooldown-end)", low=0.0, low_open=True
        ),
        "min_lr": Param(
            1e-5, "rate at the end of the annealing (> 0: the anneal is geometric)", low=0.0, low_open=True
        ),
        "warmup": warmup_param(50),
        "cooldown_end": Param(150, "step at which the cooldown reaches the constant rate", low=0),
        "constant_end": Param(800, "last step of the constant phase; annealing follows until total", low=0),
        "total": Param(0, "step at which the annealing reaches min-lr; 0 = the run length (--steps)", low=0),
        "cooldown_shape": Param(
            "cosine", "shape of the cooldown from peak to constant", choices=COOLDOWN_SHAPES
        ),
        "timescale": Param(10.0, "steepness alpha of the inverse-sqrt cooldown", low=0.0, low_open=True),
    }
    peak: float = 1e-3
    constant: float = 5e-4
    min_lr: float = 1e-5
    warmup: int = 50
    cooldown_end: int = 150
    constant_end: int = 800
    total: int = 0
    cooldown_shape: str = "cosine"
    timescale: float = 10.0

    def check(self) -> None:
        need(self.constant <= self.peak, f"constant={self.constant:g} is above peak={self.peak:g}")
        need(self.min_lr <= self.constant, f"min_lr={self.min_lr:g} is above constant={self.constant:g}")
        need(
            self.cooldown_end >= self.warmup,
            f"cooldown_end={self.cooldown_end} is before the end of warmup (warmup={self.warmup})",
        )
        need(
            self.constant_end >= self.cooldown_end,
            f"constant_end={self.constant_end} is before cooldown_end={self.cooldown_end}",
        )
        if self.total:
            need(
                self.total >= self.constant_end,
                f"total={self.total} is before constant_end={self.constant_end}",
            )

    def validate(self, total_steps: int, span: str = "the run") -> None:
        super().validate(total_steps, span)
        end = self.total or total_steps
        need(
            end >= self.constant_end, f"constant_end={self.constant_end} is after the end of {span} (step {end})"
        )

    def cooldown(self, u: float) -> float:
        """Cooldown rate at progress u in [0, 1]: peak at 0, constant at 1."""
        p, c = self.peak, self.constant
        if self.cooldown_shape == "cosine":
            return c + 0.5 * (p - c) * (1.0 + math.cos(math.pi * u))
        if self.cooldown_shape == "linear":
            return p - (p - c) * u
        a = self.timescale
        return p + (c - p) * (1.0 / math.sqrt(1.0 + a * u) - 1.0) / (1.0 / math.sqrt(1.0 + a) - 1.0)

    def lr(self, step: int) -> float:
        if not self.total:
            raise self.unbound_error()
        if step <= self.warmup:
            return warmup_value(step, self.warmup, self.peak) if self.warmup else self.peak
        if step <= self.cooldown_end:
            return self.cooldown((step - self.warmup) / (self.cooldown_end - self.warmup))
        return anneal(step, self.constant_end, self.total, self.constant, self.min_lr)
