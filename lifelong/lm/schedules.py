"""Learning rates for continual pre-training over phases, composed from :mod:`lifelong.schedules`.

Every formula is a ``lifelong.schedules`` one; this module only says which schedule runs in which phase and
where the decayed branches go. Step convention (that of ``lifelong.schedules``): the update at global step g
(0 = the first update of the run) uses ``main(g)``; a warmup starts from 0 at step 0 and reaches the peak at
step ``warmup``; a decay reaches its floor at the step just after its phase or branch ends.

A *decayed branch* at a phase end (WSD, infinite) is a short decay run off the main branch whose result is the
deployable checkpoint; training then continues from the main branch (Ibrahim et al. 2024, "Simple and Scalable
Strategies to Continually Pre-train Large Language Models").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lifelong.errors import unknown_name
from lifelong.schedules import SHAPES, Constant, Infinite, StreamSchedule, decay_branch, make_schedule

SCHEDULES = ("cosine", "linear", "infinite", "wsd", "constant")
DECAY_SHAPES = SHAPES


@dataclass(frozen=True)
class PhaseSchedule:
    """Main-branch LR over the global step (a StreamSchedule), plus an optional decayed branch per phase."""

    name: str
    stream: StreamSchedule
    branches: tuple[tuple[float, ...], ...] = ()  # per phase: the branch's rates, one per update; empty: none

    @property
    def phase_steps(self) -> tuple[int, ...]:
        """Updates per phase."""
        return tuple(self.stream.lengths)

    @property
    def starts(self) -> tuple[int, ...]:
        """Global step of each phase's first update."""
        return self.stream.starts

    def main(self, step: int) -> float:
        """The main branch's rate for the update at global step `step` (0-based)."""
        return self.stream.lr(step)

    def branch(self, phase: int) -> tuple[float, ...] | None:
        """The rates of the decayed branch taken at the end of `phase`, or None when there are no branches."""
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
    """Schedules over a sequence of phases (Ibrahim et al. 2024); the warmup is `warmup_frac` of the first phase.

    - ``cosine`` / ``linear``: ``Cosine`` / ``Linear`` restarted in every phase (StreamSchedule "restart":
      re-warm, then decay to ``min_ratio * peak`` at the phase end). The phase's last model is deployable.
    - ``infinite``: ``Infinite`` over the whole run: warmup, cooldown to ``const_ratio * peak`` by
      `cooldown_frac` of phase 1, then constant in every later phase (no re-warming); at each phase end an
      exponential-annealing branch (shape "exp") of `branch_frac` of the phase to ``min_ratio * peak`` gives
      the deployable model, and training resumes from the pre-anneal state.
    - ``wsd``: ``Constant`` after the warmup; at each phase end a ``decay_branch`` (`decay_shape`) of
      `branch_frac` of the phase to ``min_ratio * peak``.
    - ``constant``: ``Constant`` after the warmup; no branches.
    """
    if name not in SCHEDULES:
        raise unknown_name("schedule", name, SCHEDULES)
    steps = tuple(int(n) for n in phase_steps)
    floor = peak * min_ratio
    warmup = round(warmup_frac * steps[0])
    if name in ("cosine", "linear"):
        per_phase = make_schedule(name, peak=peak, warmup=warmup, min_lr=floor)
        return PhaseSchedule(name, StreamSchedule(per_phase, steps, mode="restart"))
    total = sum(steps)
    if name == "infinite":
        cooldown_end = max(warmup, round(cooldown_frac * steps[0]))
        main = Infinite(
            peak=peak,
            constant=peak * const_ratio,
            min_lr=floor,
            warmup=warmup,
            cooldown_end=cooldown_end,
            constant_end=total,
            total=total,
        )
        shape = "exp"
    else:
        main = Constant(peak=peak, warmup=warmup)
        shape = decay_shape
    stream = StreamSchedule(main, steps, mode="continue")
    if name == "constant":
        return PhaseSchedule(name, stream)
    branches = tuple(
        tuple(decay_branch(main, start + n, max(1, round(branch_frac * n)), shape, floor))
        for start, n in zip(stream.starts, steps, strict=True)
    )
    return PhaseSchedule(name, stream, branches)
