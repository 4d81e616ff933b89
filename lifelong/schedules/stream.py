"""StreamSchedule: the learning rate over a stream of experiences, as a pure function of the position.

Three modes: "continue" runs one schedule across the whole stream (run length = all steps); "restart" runs a
fresh copy in every experience (re-warm and re-decay, run length = that experience); "infinite" runs the
infinite schedule's warmup/cooldown/constant/anneal in the first experience, and every later experience starts
in the constant phase (no re-warm) and anneals over its tail.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from lifelong.errors import LifelongError
from lifelong.schedules.base import Schedule, need
from lifelong.schedules.infinite import Infinite, anneal

MODES = ("restart", "continue", "infinite")


@dataclass(frozen=True)
class StreamSchedule:
    """Rate at (experience, step within experience, global step); `lr(global_step)` also works (ScheduleLR).

    `lengths` are the experiences' step counts. Run-length fields left at 0 in `schedule` take the stream
    length ("continue") or each experience's length ("restart", "infinite"'s first experience); a schedule
    whose decay would not finish within that length is refused (LifelongError naming the field). In
    "infinite" mode later experiences anneal over their last `anneal_fraction` of steps (None: the same
    fraction as the first experience's annealing tail; 0: never anneal). The rate jumps back to the
    constant rate at each new experience: continue from the pre-annealing weights (Ibrahim et al.) or from
    the annealed ones; `anneal_start(k)` says when to snapshot the former.
    """

    schedule: Schedule
    lengths: Sequence[int]
    mode: str = "continue"
    anneal_fraction: float | None = None
    starts: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    parts: tuple[Schedule, ...] = field(default=(), init=False, repr=False, compare=False)
    anneal_starts: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lengths = tuple(int(n) for n in self.lengths)
        need(len(lengths) >= 1, "lengths is empty: give the number of steps of every experience")
        need(all(n >= 1 for n in lengths), f"lengths={list(lengths)} must all be >= 1")
        if self.mode not in MODES:
            raise LifelongError(f"mode={self.mode!r} is not allowed: expected one of {'|'.join(MODES)}")
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "starts", tuple(starts))
        if self.mode == "continue":
            parts = (self.schedule.bind(sum(lengths), "the stream (schedule_mode=continue)"),)
        elif self.mode == "restart":
            parts = tuple(
                self.schedule.bind(n, f"experience {k} (schedule_mode=restart)") for k, n in enumerate(lengths)
            )
        else:
            parts = self._infinite(lengths)
        object.__setattr__(self, "parts", parts)

    def _infinite(self, lengths: tuple[int, ...]) -> tuple[Schedule, ...]:
        if not isinstance(self.schedule, Infinite):
            raise LifelongError(f"mode='infinite' needs the infinite schedule, not '{self.schedule.name}'")
        first = self.schedule.bind(lengths[0], "experience 0 (schedule_mode=infinite)")
        fraction = self.anneal_fraction
        if fraction is None:
            fraction = (first.total - first.constant_end) / first.total
        need(0.0 <= fraction <= 1.0, f"anneal_fraction={fraction:g} must be in [0, 1]")
        object.__setattr__(self, "anneal_fraction", fraction)
        tails = (first.constant_end, *(n - round(fraction * n) for n in lengths[1:]))
        object.__setattr__(self, "anneal_starts", tails)
        return (first,)

    def lr_for(self, experience: int, step: int, global_step: int) -> float:
        """The rate for `step` of `experience` (both from 0), which is step `global_step` of the stream."""
        if self.mode == "continue":
            return self.parts[0].lr(global_step)
        if self.mode == "restart":
            return self.parts[experience].lr(step)
        if experience == 0:
            return self.parts[0].lr(step)
        s: Infinite = self.parts[0]  # type: ignore[assignment]
        return anneal(step, self.anneal_starts[experience], self.lengths[experience], s.constant, s.min_lr)

    def end_rates(self) -> list[float]:
        """The rate of the last step of every experience (where a decay branch off that experience starts)."""
        return [
            self.lr_for(k, n - 1, start + n - 1)
            for k, (start, n) in enumerate(zip(self.starts, self.lengths, strict=True))
        ]

    def locate(self, global_step: int) -> tuple[int, int]:
        """(experience, step within it) of a global step; steps past the stream are in the last one."""
        k = max(bisect.bisect_right(self.starts, global_step) - 1, 0)
        return k, global_step - self.starts[k]

    def lr(self, global_step: int) -> float:
        """The rate at a global step of the stream."""
        k, step = self.locate(global_step)
        return self.lr_for(k, step, global_step)

    def anneal_start(self, experience: int) -> int:
        """Infinite mode: step within `experience` after which annealing starts."""
        need(self.mode == "infinite", f"anneal_start is only defined in mode='infinite' (mode={self.mode!r})")
        return self.anneal_starts[experience]
