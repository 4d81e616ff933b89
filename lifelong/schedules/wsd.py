"""WSD (warmup-stable-decay), WSD-S (decay at pit stops, then resume at the peak), WSDC, and the decay branch.

WSD needs no step budget until you decide to stop: the stable phase can last as long as you like. WSD-S turns
each budget into a pit stop of the single run; `decay_branch` gives the short decay run that plain WSD
branches off a copy of the main state for each budget.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.schedules.base import Schedule, min_lr_param, need, peak_param, warmup_param, warmup_value
from lifelong.schedules.shapes import NEEDS_POSITIVE_FLOOR, SHAPE_HELP, SHAPES, decay


def _check_shape(shape: str, peak: float, min_lr: float) -> None:
    need(min_lr <= peak, f"min_lr={min_lr:g} is above peak={peak:g}")
    need(
        shape not in NEEDS_POSITIVE_FLOOR or min_lr > 0 or peak == 0,
        f"min_lr={min_lr:g} must be > 0 with shape={shape} (it decays geometrically towards min-lr)",
    )


def shape_param(default: str) -> Param:
    return Param(default, SHAPE_HELP, choices=SHAPES)


def _wsd_rate(step: int, s: WSD | WSDC, decay_start: int) -> float:
    """The WSD rate at `step`: warmup, `s.peak` until `decay_start`, decay to `s.min_lr` over `s.decay_steps`."""
    if step < s.warmup:
        return warmup_value(step, s.warmup, s.peak)
    if step < decay_start:
        return s.peak
    if step >= decay_start + s.decay_steps:
        return s.min_lr
    return decay(s.shape, (step - decay_start) / s.decay_steps, s.peak, s.min_lr)


@dataclass(frozen=True)
class WSD(Schedule):
    """Warmup-stable-decay: warmup to peak, constant until decay-start, decay to min-lr over decay-steps.

    Bound to a run (or an experience) the decay must end by its last step: decay_start + decay_steps <= the
    length (decay_steps=0, a drop to min-lr, must happen before the end). A WSD whose stable phase never
    ends within the run is the `constant` schedule with the same warmup.
    """

    name: ClassVar[str] = "wsd"
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "warmup": warmup_param(10),
        "decay_start": Param(800, "first step of the decay (when you decide to stop)", low=0),
        "decay_steps": Param(
            200, "length of the decay; min-lr is reached at decay-start + decay-steps", low=0
        ),
        "min_lr": min_lr_param(1e-4),
        "shape": shape_param("linear"),
    }
    peak: float = 1e-3
    warmup: int = 10
    decay_start: int = 800
    decay_steps: int = 200
    min_lr: float = 1e-4
    shape: str = "linear"

    def check(self) -> None:
        need(
            self.decay_start >= self.warmup,
            f"decay_start={self.decay_start} is before the end of warmup (warmup={self.warmup})",
        )
        _check_shape(self.shape, self.peak, self.min_lr)

    def validate(self, total_steps: int, span: str = "the run") -> None:
        super().validate(total_steps, span)
        start, steps = self.decay_start, self.decay_steps
        if steps == 0:
            need(
                start < total_steps,
                f"decay_start={start} (decay_steps=0: a drop to min_lr) is not before the end of {span}, which "
                f"has {total_steps} steps: lower decay_start, or use the constant schedule for no decay",
            )
        need(
            start + steps <= total_steps,
            f"decay_start={start} + decay_steps={steps} ends at step {start + steps} but {span} has "
            f"{total_steps} steps: lower decay_start or decay_steps",
        )

    def lr(self, step: int) -> float:
        return _wsd_rate(step, self, self.decay_start)


@dataclass(frozen=True)
class WSDC(Schedule):
    """Warmup-stable-decay-constant (PLM, Deng et al. 2025): WSD whose decay is followed by tail-steps at min-lr.

    The constant tail ends the run: bound to a run (or an experience) of `total` steps, the decay starts at
    total - tail_steps - decay_steps and reaches min-lr at total - tail_steps; the stable phase takes what
    is left after the warmup. PLM's paper names the four phases; the tail's level (min-lr here) is not
    verified against it.
    """

    name: ClassVar[str] = "wsdc"
    run_length_fields: ClassVar[tuple[str, ...]] = ("total",)
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "warmup": warmup_param(10),
        "decay_steps": Param(200, "length of the decay, which ends tail-steps before the end of the run", low=0),
        "tail_steps": Param(0, "steps trained at min-lr after the decay; the run ends after them", low=0),
        "min_lr": min_lr_param(1e-4),
        "shape": shape_param("linear"),
        "total": Param(0, "last step of the tail (the run length); 0 = the run length (--steps)", low=0),
    }
    peak: float = 1e-3
    warmup: int = 10
    decay_steps: int = 200
    tail_steps: int = 0
    min_lr: float = 1e-4
    shape: str = "linear"
    total: int = 0

    def check(self) -> None:
        _check_shape(self.shape, self.peak, self.min_lr)
        if self.total:
            self._check_phases(self.total, "the run")

    def _check_phases(self, length: int, span: str) -> None:
        w, d, t = self.warmup, self.decay_steps, self.tail_steps
        need(
            w + d + t <= length,
            f"warmup={w} + decay_steps={d} + tail_steps={t} = {w + d + t} steps do not fit in {span}, which "
            f"has {length} steps: lower them",
        )

    def validate(self, total_steps: int, span: str = "the run") -> None:
        super().validate(total_steps, span)
        need(
            self.total in (0, total_steps),
            f"total={self.total} but {span} has {total_steps} steps: the tail ends the run, so total must "
            "be the length (or 0)",
        )
        self._check_phases(total_steps, span)

    @property
    def decay_start(self) -> int:
        """First step of the decay: total - tail_steps - decay_steps."""
        if not self.total:
            raise self.unbound_error()
        return self.total - self.tail_steps - self.decay_steps

    @property
    def end(self) -> int:
        """Number of steps of the whole run: warmup, stable, decay and constant tail."""
        return self.decay_start + self.decay_steps + self.tail_steps

    def lr(self, step: int) -> float:
        return _wsd_rate(step, self, self.decay_start)


def _parse_steps(key: str, value: Any) -> tuple[int, ...]:
    """A tuple of step indices from a tuple/list or a comma-separated string such as '1000,2000,4000'."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    try:
        steps = tuple(int(v) for v in items)
        if any(float(v) != int(v) for v in items):
            raise ValueError
    except (TypeError, ValueError):
        raise LifelongError(f"{key}={value!r} is not a list of integer steps (e.g. 1000,2000,4000)") from None
    return steps


@dataclass(frozen=True)
class WSDS(Schedule):
    """WSD-S: a WSD cycle ends at every pit stop (decayed checkpoint); training resumes at peak.

    Cycle k covers steps [h_{k-1}, h_k) with h_0 = warmup; it is stable until
    S_k = h_{k-1} + floor((1 - decay_fraction)·(h_k - h_{k-1})) and decays to min-lr over [S_k, h_k). The
    checkpoint after h_k steps is the deliverable for budget h_k; step h_k starts the next cycle at the peak
    (no re-warmup, optimiser state kept). After the last pit stop the rate stays at min-lr. With one pit stop
    it equals WSD(decay_start=S_1, decay_steps=h_1 - S_1).
    """

    name: ClassVar[str] = "wsd-s"
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "warmup": warmup_param(10),
        "pit_stops": Param(
            (250, 500, 1000), "increasing steps at which a decayed checkpoint is due, e.g. 250,500,1000"
        ),
        "decay_fraction": Param(
            0.1, "fraction of each cycle spent decaying", low=0.0, high=1.0, low_open=True
        ),
        "min_lr": min_lr_param(1e-4),
        "shape": shape_param("inverse"),
    }
    peak: float = 1e-3
    warmup: int = 10
    pit_stops: tuple[int, ...] = (250, 500, 1000)
    decay_fraction: float = 0.1
    min_lr: float = 1e-4
    shape: str = "inverse"
    windows: tuple[tuple[int, int, int], ...] = field(default=(), init=False, repr=False, compare=False)

    def coerce(self, key: str, spec: Param, value: Any) -> Any:
        return _parse_steps(key, value) if key == "pit_stops" else super().coerce(key, spec, value)

    def check(self) -> None:
        stops = self.pit_stops
        need(len(stops) >= 1, "pit_stops is empty: give at least one step")
        need(
            stops[0] > self.warmup,
            f"pit_stops={stops[0]} is not after the end of warmup (warmup={self.warmup})",
        )
        need(
            all(a < b for a, b in zip(stops[:-1], stops[1:], strict=True)),
            f"pit_stops={list(stops)} must be strictly increasing",
        )
        _check_shape(self.shape, self.peak, self.min_lr)
        starts = (self.warmup, *stops[:-1])
        windows = []
        for start, end in zip(starts, stops, strict=True):
            stable = int(math.floor((1.0 - self.decay_fraction) * (end - start) + 1e-9))
            windows.append((start, min(start + stable, end - 1), end))
        object.__setattr__(self, "windows", tuple(windows))

    def validate(self, total_steps: int, span: str = "the run") -> None:
        super().validate(total_steps, span)
        last = self.pit_stops[-1]
        need(
            last <= total_steps,
            f"pit_stops={last} is after the end of {span}, which has {total_steps} steps, so its decay would not "
            "finish: lower or drop that pit stop",
        )

    def decay_windows(self) -> list[tuple[int, int]]:
        """(first decay step S_k, pit stop h_k) for every cycle."""
        return [(s, h) for _, s, h in self.windows]

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return warmup_value(step, self.warmup, self.peak)
        k = bisect.bisect_right(self.pit_stops, step)
        if k == len(self.windows):
            return self.min_lr
        _, start, end = self.windows[k]
        if step < start:
            return self.peak
        return decay(self.shape, (step - start) / (end - start), self.peak, self.min_lr)


def decay_branch(
    main: Schedule, start: int, steps: int, shape: str = "linear", min_lr: float = 0.0
) -> list[float]:
    """Rates of a decay branch taken off `main` at step `start`: one per step start..start+steps-1.

    The branch decays from main.lr(start) to `min_lr` (reached just after the branch) with `shape`. Run it
    on a copy of the model and optimiser state; the branch's final model is the decayed checkpoint, then the
    main branch resumes from the copy at `start`. Off a stable WSD main branch it equals
    WSD(decay_start=start, decay_steps=steps) on those steps.
    """
    need(steps >= 1, f"steps={steps} must be at least 1 for a decay branch")
    need(start >= 0, f"start={start} must be >= 0")
    if shape not in SHAPES:
        raise LifelongError(f"shape={shape!r} is not allowed: expected one of {'|'.join(SHAPES)}")
    need(min_lr >= 0, f"min_lr={min_lr:g} is negative")
    high = main.lr(start)
    need(min_lr <= high, f"min_lr={min_lr:g} is above the main branch's rate at step {start} ({high:g})")
    _check_shape(shape, high, min_lr)
    return [decay(shape, i / steps, high, min_lr) for i in range(steps)]


def check_branch_floor(min_lr: float, start_rates: Sequence[float], setting: str = "branch_min_lr") -> None:
    """Refuse a decay-branch floor above the rate some branch would start from (before any training).

    `start_rates[k]` is the rate of the last step of experience k, where its branch starts (for a stream
    schedule: StreamSchedule.end_rates(); for a constant rate: that rate for every experience).
    """
    for k, high in enumerate(start_rates):
        need(
            min_lr <= high,
            f"{setting}={min_lr:g} is above the learning rate at the end of experience {k} ({high:g}), where "
            f"its decay branch starts: lower {setting}",
        )
