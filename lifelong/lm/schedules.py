"""Learning-rate schedules for continual pre-training over phases, as small pure functions ``lr(t) -> float``.

Interface: every schedule is a ``Callable[[int], float]`` (``LRFn``) of the 1-based update index t: the i-th
optimizer update (i = 0, 1, ...) uses ``lr(i + 1)``, so the first update of a warmup gets peak/W and the last
update of a decay gets exactly the floor. They are deliberately tiny so that they can later be swapped for the
general ``lifelong.schedules`` functions without touching the training loop.

A run-level :class:`PhaseSchedule` gives the main-branch LR over the global update index, and optionally a
*decayed branch* per phase end (WSD, infinite): a short decay run off the main branch whose result is the
deployable checkpoint, after which training continues from the main branch (Ibrahim et al. 2024, methods.md
§1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lifelong.errors import unknown_name

LRFn = Callable[[int], float]

SCHEDULES = ("cosine", "linear", "infinite", "wsd", "constant")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _shape(name: str) -> Callable[[float], float]:
    """g: [0,1] -> [0,1], g(0)=1, g(1)=0."""
    if name == "linear":
        return lambda u: 1.0 - u
    if name == "cosine":
        return lambda u: 0.5 * (1.0 + math.cos(math.pi * u))
    if name == "1-sqrt":
        return lambda u: 1.0 - math.sqrt(u)
    raise unknown_name("decay shape", name, DECAY_SHAPES)


def warmup_decay(peak: float, floor: float, warmup: int, total: int, shape: str = "cosine") -> LRFn:
    """Linear warmup 0 -> peak over `warmup` updates, then decay peak -> floor, reaching floor at t =
    total."""
    g = _shape(shape)

    def lr(t: int) -> float:
        if t < warmup:
            return peak * t / warmup
        if total <= warmup:
            return peak
        u = min(1.0, (t - warmup) / (total - warmup))
        return floor + (peak - floor) * g(u)

    return lr


def warmup_constant(peak: float, warmup: int) -> LRFn:
    """Linear warmup to `peak`, then constant (the stable part of WSD; also the 'constant' schedule)."""
    return lambda t: peak * t / warmup if t < warmup else peak


def infinite(peak: float, const: float, warmup: int, cooldown_end: int, shape: str = "cosine") -> LRFn:
    """Infinite schedule, main branch: warmup to `peak`, cool down to `const` by `cooldown_end`, then
    constant."""
    g = _shape(shape)

    def lr(t: int) -> float:
        if t < warmup:
            return peak * t / warmup
        if t < cooldown_end:
            u = (t - warmup) / max(1, cooldown_end - warmup)
            return const + (peak - const) * g(u)
        return const

    return lr


def decay_branch(start: float, floor: float, steps: int, shape: str = "linear") -> LRFn:
    """A decay branch of `steps` updates from `start` to `floor`: lr(t) for t = 1..steps, lr(steps) =
    floor."""
    g = _shape(shape)
    return lambda t: floor + (start - floor) * g(min(1.0, t / steps))


def exp_anneal(start: float, floor: float, steps: int) -> LRFn:
    """Exponential annealing start -> floor over `steps` updates (the infinite schedule's annealing phase)."""
    return lambda t: start * (floor / start) ** min(1.0, t / steps)


def shifted(fn: LRFn, offset: int) -> LRFn:
    return lambda t: fn(t - offset)


@dataclass(frozen=True)
class PhaseSchedule:
    """Main-branch LR over the global update index, plus an optional decayed branch at each phase end."""

    name: str
    phase_steps: tuple[int, ...]
    main: LRFn
    branches: tuple[tuple[int, LRFn], ...] = ()  # per phase: (updates, lr over 1..updates); empty: no branch

    @property
    def starts(self) -> list[int]:
        out, s = [], 0
        for n in self.phase_steps:
            out.append(s)
            s += n
        return out

    def branch(self, phase: int) -> tuple[int, LRFn] | None:
        return self.branches[phase] if self.branches else None


def make_phase_schedule(
    name: str,
    phase_steps: Sequence[int],
    peak: float,
    min_ratio: float = 0.1,
    warmup_frac: float = 0.05,
    const_ratio: float = 0.5,
    cooldown_frac: float = 0.15,
    branch_frac: float = 0.1,
    decay_shape: str = "linear",
) -> PhaseSchedule:
    """Schedules over a sequence of phases (methods.md §1):

    - ``cosine`` / ``linear``: re-warm + re-decay in every phase (warmup `warmup_frac` of the phase, decay to
      ``min_ratio * peak`` at the phase end). The last checkpoint of each phase is the deployable one.
    - ``infinite``: warmup, cooldown to ``const_ratio * peak`` by `cooldown_frac` of phase 1, then constant in
      every later phase (no re-warming); at each phase end an exponential-annealing branch of `branch_frac` of
      the phase to ``min_ratio * peak`` gives the deployable checkpoint; training resumes from the
      pre-anneal state.
    - ``wsd``: warmup, then constant peak; at each phase end a decay branch (`decay_shape`) of `branch_frac`
      of the phase to ``min_ratio * peak``.
    - ``constant``: warmup then constant peak; no branches.
    """
    steps = tuple(int(n) for n in phase_steps)
    floor = peak * min_ratio
    starts = [sum(steps[:k]) for k in range(len(steps))]
    w0 = max(1, round(warmup_frac * steps[0]))
    if name in ("cosine", "linear"):
        pieces = [
            (s, n, warmup_decay(peak, floor, max(1, round(warmup_frac * n)), n, name))
            for s, n in zip(starts, steps, strict=True)
        ]

        def main(t: int) -> float:
            for s, _n, fn in reversed(pieces):
                if t > s:
                    return fn(t - s)
            return pieces[0][2](t)

        return PhaseSchedule(name, steps, main)
    branch_steps = [max(1, round(branch_frac * n)) for n in steps]
    if name == "infinite":
        const = peak * const_ratio
        main = infinite(peak, const, w0, max(w0, round(cooldown_frac * steps[0])))
        branches = tuple((b, exp_anneal(const, floor, b)) for b in branch_steps)
        return PhaseSchedule(name, steps, main, branches)
    if name == "wsd":
        main = warmup_constant(peak, w0)
        branches = tuple((b, decay_branch(peak, floor, b, decay_shape)) for b in branch_steps)
        return PhaseSchedule(name, steps, main, branches)
    if name == "constant":
        return PhaseSchedule(name, steps, warmup_constant(peak, w0))
    raise unknown_name("schedule", name, SCHEDULES)
