"""Budget-known baselines: constant, linear decay, cosine, and cosine restarted every `period` steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from lifelong.params import Param
from lifelong.schedules.base import (
    Schedule,
    min_lr_param,
    need,
    peak_param,
    total_param,
    warmup_param,
    warmup_value,
)


@dataclass(frozen=True)
class Constant(Schedule):
    """Constant rate after an optional linear warmup."""

    name: ClassVar[str] = "constant"
    params: ClassVar[dict[str, Param]] = {
        "peak": Param(1e-3, "the constant learning rate", low=0.0),
        "warmup": warmup_param(),
    }
    peak: float = 1e-3
    warmup: int = 0

    def lr(self, step: int) -> float:
        return warmup_value(step, self.warmup, self.peak) if step < self.warmup else self.peak


@dataclass(frozen=True)
class _Decay(Schedule):
    """Warmup to `peak`, then a decay to `min_lr` reached at step `total` and held afterwards."""

    run_length_fields: ClassVar[tuple[str, ...]] = ("total",)
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "warmup": warmup_param(),
        "min_lr": min_lr_param(),
        "total": total_param(),
    }
    peak: float = 1e-3
    warmup: int = 0
    min_lr: float = 0.0
    total: int = 0

    def check(self) -> None:
        need(self.min_lr <= self.peak, f"min_lr={self.min_lr:g} is above peak={self.peak:g}")
        if self.total:
            need(
                self.warmup <= self.total, f"warmup={self.warmup} is longer than the run (total={self.total})"
            )

    def shape(self, u: float) -> float:
        raise NotImplementedError

    def lr(self, step: int) -> float:
        if not self.total:
            raise self.unbound_error()
        if step < self.warmup:
            return warmup_value(step, self.warmup, self.peak)
        if step >= self.total:
            return self.min_lr
        u = (step - self.warmup) / (self.total - self.warmup)
        return self.min_lr + (self.peak - self.min_lr) * self.shape(u)


@dataclass(frozen=True)
class Linear(_Decay):
    """Linear warmup, then linear decay to min-lr at the end of the run (Defazio et al.'s default)."""

    name: ClassVar[str] = "linear"

    def shape(self, u: float) -> float:
        return 1.0 - u


@dataclass(frozen=True)
class Cosine(_Decay):
    """Linear warmup, then half-cosine decay to min-lr at the end of the run."""

    name: ClassVar[str] = "cosine"

    def shape(self, u: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * u))


@dataclass(frozen=True)
class RepeatedCosine(Schedule):
    """Warmup + cosine restarted every `period` steps (re-warm, re-decay; Ibrahim et al. 2024).

    For experiences of unequal length use StreamSchedule(Cosine(...), lengths, mode="restart").
    """

    name: ClassVar[str] = "repeated-cosine"
    run_length_fields: ClassVar[tuple[str, ...]] = ("period",)
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "warmup": warmup_param(),
        "min_lr": min_lr_param(),
        "period": Param(0, "steps per cycle (one experience); 0 = the run length (a single cycle)", low=0),
    }
    peak: float = 1e-3
    warmup: int = 0
    min_lr: float = 0.0
    period: int = 0

    def check(self) -> None:
        need(self.min_lr <= self.peak, f"min_lr={self.min_lr:g} is above peak={self.peak:g}")
        if self.period:
            need(
                self.warmup <= self.period, f"warmup={self.warmup} is longer than the period ({self.period})"
            )

    def validate(self, total_steps: int, span: str = "the run") -> None:
        need(total_steps >= 1, f"steps={total_steps} must be at least 1")
        limit = self.period or total_steps
        need(self.warmup <= limit, f"warmup={self.warmup} is longer than the cycle ({limit} steps)")
        need(
            limit <= total_steps,
            f"period={limit} is longer than {span}, which has {total_steps} steps, so its first decay would not "
            "finish: lower period or leave it at 0 (= the length)",
        )
        need(
            total_steps % limit == 0,
            f"period={limit} does not divide {span}, which has {total_steps} steps: its last cycle would stop after "
            f"{total_steps % limit} steps, before its decay ends; choose a period that divides the length",
        )

    def lr(self, step: int) -> float:
        if not self.period:
            raise self.unbound_error()
        t = step % self.period
        if t < self.warmup:
            return warmup_value(t, self.warmup, self.peak)
        u = (t - self.warmup) / (self.period - self.warmup)
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * u))
