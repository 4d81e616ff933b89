"""Refined schedule (Defazio et al. 2023): a problem-adapted schedule from a previous run's gradient norms.

With n recorded norms g_0..g_{n-1} (smoothed by a median filter), w_t = g_t^-2 · sum_{p>t} g_p^-2 (the
tail sum excludes t, so w_{n-1} = 0) and lr_t = peak · w_t / max_s w_s: normalised by the maximum as in the
paper (the authors' helper normalises by a tail sum instead). With constant norms w_t is proportional to
n-1-t, i.e. exactly linear decay from peak at step 0 to 0 at step n-1 = Linear(total=n-1). The Adam variant
(power=1) uses l1 gradient norms and w_t = g_t^-1 · sum_{p>t} g_p^-1.

A schedule refined from n norms is for a run of n steps (one norm per update): binding it to a run of any
other length is refused, since a shorter record leaves the rest of the run at rate 0 and a longer one ends
the run before the decay. The training engine records both norms of every update (`gradient_norms`) as the
run's scalars "grad_norm" (l2) and "grad_norm_l1"; give the run directory as `grad_norms` to refine from them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.schedules.base import Schedule, need, peak_param, warmup_param, warmup_value


def median_smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Centred running median with `width` points, padding by repeating the edge values."""
    if width <= 1:
        return values
    padded = np.pad(values, (width // 2, width - 1 - width // 2), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)


def refine(grad_norms: Sequence[float], smoothing: float = 0.1, power: float = 2.0) -> list[float]:
    """Refined multipliers in [0, 1] (max 1, last 0) from a recorded gradient-norm sequence."""
    g = np.asarray(grad_norms, dtype=np.float64)
    g = median_smooth(g, max(1, round(smoothing * len(g))))
    log_g = np.log(g)
    inv = np.exp(-power * (log_g - log_g.min()))  # g^-power scaled to max 1: no overflow for extreme norms
    tail = np.concatenate([np.cumsum(inv[::-1])[::-1][1:], [0.0]])
    w = inv * tail
    top = w.max()
    return (w / top).tolist() if top > 0 else [0.0] * len(w)


NORM_SCALARS = {2.0: "grad_norm", 1.0: "grad_norm_l1"}  # run-store scalar of the l2 / l1 gradient norm


def gradient_norms(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The l2 and l1 norms of the current gradients of `parameters`, as a 2-element tensor (no host sync).

    Call it after backward and before the optimizer step; parameters without a gradient are skipped.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(2)
    l2, l1 = torch._foreach_norm(grads, 2), torch._foreach_norm(grads, 1)
    if len({g.dtype for g in grads}) > 1:
        l2, l1 = [n.float() for n in l2], [n.float() for n in l1]
    return torch.stack([torch.linalg.vector_norm(torch.stack(l2)), torch.stack(l1).sum()])


def norms_from_run(run_dir: str, power: float = 2.0) -> tuple[float, ...]:
    """One gradient norm per step from a run directory's store: l1 norms for power=1, l2 norms otherwise."""
    from lifelong.tracking.store import RunStore

    name = NORM_SCALARS[1.0] if power == 1.0 else NORM_SCALARS[2.0]
    store = RunStore.open(run_dir)
    try:
        steps, values = store.scalars(name)
    finally:
        store.close()
    if not values:
        raise LifelongError(
            f"grad_norms={run_dir!r}: that run has no '{name}' record (it was trained without gradient-norm "
            "recording)"
        )
    if steps != list(range(steps[0], steps[0] + len(steps))):
        raise LifelongError(f"grad_norms={run_dir!r}: the run's '{name}' record has gaps between its steps")
    return tuple(values)


def load_norms(value: Any, power: float = 2.0) -> tuple[float, ...]:
    """Norms from a sequence, a comma-separated string, a run directory (its recorded norms, l1 for
    power=1), or a file: JSON list, JSON {"grad_norms": [...]}, or numbers separated by whitespace/commas."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and os.path.isdir(value):
        return norms_from_run(value, power)
    if isinstance(value, str):
        text = value
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                text = f.read()
        elif value.endswith((".json", ".txt", ".csv")):
            raise LifelongError(f"grad_norms={value!r}: no such file")
        try:
            data = json.loads(text)
            value = data["grad_norms"] if isinstance(data, dict) else data
        except (json.JSONDecodeError, KeyError, TypeError):
            value = text.replace(",", " ").split()
    try:
        norms = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise LifelongError(
            "grad_norms is not a list of numbers (give a JSON/text file, a run directory or 1.0,0.9,...)"
        ) from None
    return norms


@dataclass(frozen=True)
class Refined(Schedule):
    """Refined schedule from recorded gradient norms (Defazio et al.); optional warmup; 0 after the record."""

    name: ClassVar[str] = "refined"
    params: ClassVar[dict[str, Param]] = {  # power before grad_norms: it picks a run's l1 or l2 record
        "peak": peak_param(),
        "warmup": warmup_param(),
        "power": Param(
            2.0,
            "w_t = g_t^-power · sum_{p>t} g_p^-power: 2 for SGD (l2 norms), 1 for Adam (l1)",
            low=0.0,
            low_open=True,
        ),
        "grad_norms": Param(
            (1.0, 1.0),
            "recorded gradient norms, one per step: a run directory, a JSON/text file or a comma list",
        ),
        "smoothing": Param(
            0.1, "median-filter width as a fraction of the record (0 = none)", low=0.0, high=1.0
        ),
    }
    peak: float = 1e-3
    warmup: int = 0
    grad_norms: tuple[float, ...] = (1.0, 1.0)
    smoothing: float = 0.1
    power: float = 2.0
    multipliers: tuple[float, ...] = field(default=(), init=False, repr=False, compare=False)

    def coerce(self, key: str, spec: Param, value: Any) -> Any:
        if key == "grad_norms":
            return load_norms(value, self.power)
        return super().coerce(key, spec, value)

    def check(self) -> None:
        n = self.grad_norms
        need(len(n) >= 2, f"grad_norms has {len(n)} values: need at least 2")
        need(all(math.isfinite(v) and v > 0 for v in n), "grad_norms must all be finite and > 0")
        need(self.warmup <= len(n), f"warmup={self.warmup} is longer than the record ({len(n)} steps)")
        object.__setattr__(self, "multipliers", tuple(refine(n, self.smoothing, self.power)))

    def validate(self, total_steps: int, span: str = "the run") -> None:
        super().validate(total_steps, span)
        n = len(self.grad_norms)
        need(
            n == total_steps,
            f"grad_norms has {n} values but {span} has {total_steps} steps: a refined schedule needs one "
            "recorded norm per step (the record of a run of the same length)",
        )

    def lr(self, step: int) -> float:
        if step >= len(self.multipliers):
            return 0.0
        rate = self.peak * self.multipliers[step]
        return warmup_value(step, self.warmup, rate) if step < self.warmup else rate
