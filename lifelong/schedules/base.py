"""The Schedule base class: a frozen dataclass whose `lr(step)` is a pure function of the step.

Why pure: a schedule with no hidden state can be plotted, tested against its formula, resumed from any step
and branched (WSD-S decays off the main branch, then the main branch resumes) without bookkeeping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from lifelong.errors import LifelongError
from lifelong.params import Param

S = TypeVar("S", bound="Schedule")

RATE_HELP = "absolute learning rate"


def peak_param(default: float = 1e-3) -> Param:
    return Param(default, "peak learning rate (reached at the end of warmup)", low=0.0)


def min_lr_param(default: float = 0.0, positive: bool = False) -> Param:
    return Param(default, "final (floor) learning rate", low=0.0, low_open=positive)


def warmup_param(default: int = 0) -> Param:
    return Param(default, "warmup steps: linear from 0 at step 0 to the peak at this step", low=0)


def total_param() -> Param:
    return Param(0, "step at which the decay reaches min-lr; 0 = the run length (--steps)", low=0)


def warmup_value(step: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup value peak·step/warmup_steps (0 at step 0, peak at warmup_steps)."""
    return peak * max(step, 0) / warmup_steps


def need(ok: bool, message: str) -> None:
    """Raise a one-line LifelongError unless `ok`; `message` starts with the parameter it is about."""
    if not ok:
        raise LifelongError(message)


@dataclass(frozen=True)
class Schedule:
    """An absolute learning rate as a pure function of the optimiser step (step 0 is the first update).

    Subclasses declare their hyperparameters in `params` (one dataclass field per entry, same name) and put
    cross-parameter checks in `check`. Fields listed in `run_length_fields` may be 0, meaning "the run
    length", filled in by `bind(total_steps)`.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    run_length_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for key, spec in self.params.items():
            object.__setattr__(self, key, self.coerce(key, spec, getattr(self, key)))
        self.check()

    def coerce(self, key: str, spec: Param, value: Any) -> Any:
        """Convert and range-check one field; subclasses override for non-scalar fields."""
        return spec.coerce(key, value)

    def check(self) -> None:
        """Cross-parameter checks; raise LifelongError naming the parameter. Nothing to check by default."""

    def lr(self, step: int) -> float:
        """The absolute learning rate at `step` (>= 0)."""
        raise NotImplementedError

    @property
    def bound(self) -> bool:
        """False while a run-length field is still 0 (unknown run length)."""
        return all(getattr(self, key) > 0 for key in self.run_length_fields)

    def validate(self, total_steps: int, span: str = "the run") -> None:
        """Check that this schedule fits `span` (e.g. "experience 2 (schedule_mode=restart)") of `total_steps`
        steps: warmup not longer than it, and every decay finished by its end (step `total_steps`)."""
        need(total_steps >= 1, f"steps={total_steps} must be at least 1")
        w = getattr(self, "warmup", 0)
        need(w <= total_steps, f"warmup={w} is longer than {span}, which has {total_steps} steps")
        for key in self.run_length_fields:
            value = getattr(self, key)
            need(
                value <= total_steps,
                f"{key}={value} is after the end of {span}, which has {total_steps} steps, so the decay would not "
                f"finish: lower {key} or leave it at 0 (= the length)",
            )

    def bind(self: S, total_steps: int, span: str = "the run") -> S:
        """This schedule for `span` of `total_steps` steps; run-length fields of 0 take that value.

        Raises LifelongError (naming the field, its value and the length) when the schedule does not fit,
        e.g. a decay that would end after the last step: it would otherwise run silently without its decay.
        """
        self.validate(total_steps, span)
        fill = {key: total_steps for key in self.run_length_fields if getattr(self, key) == 0}
        return dataclasses.replace(self, **fill) if fill else self

    def lrs(self, steps: int) -> list[float]:
        """The rates at steps 0..steps-1."""
        return [self.lr(t) for t in range(steps)]

    def values(self) -> dict[str, Any]:
        """The hyperparameter values, by name."""
        return {key: getattr(self, key) for key in self.params}

    def unbound_error(self) -> LifelongError:
        keys = ", ".join(self.run_length_fields)
        return LifelongError(
            f"{keys}=0 means 'the run length', which is not known yet: call bind(total_steps)"
        )
