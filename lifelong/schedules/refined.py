"""Refined schedule (Defazio et al. 2023): a problem-adapted schedule from a previous run's gradient norms.

With n recorded norms g_0..g_{n-1} (smoothed by a median filter), w_t = g_t^-2 · sum_{p>t} g_p^-2 (the
tail sum excludes t, so w_{n-1} = 0) and lr_t = peak · w_t / max_s w_s: normalised by the maximum as in the
paper (the authors' helper normalises by a tail sum instead). With constant norms w_t is proportional to
n-1-t, i.e. exactly linear decay from peak at step 0 to 0 at step n-1 = Linear(total=n-1). The Adam variant
(power=1) uses l1 gradient norms and w_t = g_t^-1 · sum_{p>t} g_p^-1.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

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


def load_norms(value: Any) -> tuple[float, ...]:
    """Norms from a sequence, a comma-separated string, or a file: JSON list, JSON {"grad_norms": [...]},
    or numbers separated by whitespace/commas."""
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
            "grad_norms is not a list of numbers (give a JSON/text file or 1.0,0.9,...)"
        ) from None
    return norms


@dataclass(frozen=True)
class Refined(Schedule):
    """Refined schedule from recorded gradient norms (Defazio et al.); optional warmup; 0 after the record."""

    name: ClassVar[str] = "refined"
    params: ClassVar[dict[str, Param]] = {
        "peak": peak_param(),
        "warmup": warmup_param(),
        "grad_norms": Param(
            (1.0, 1.0), "recorded gradient norms: a JSON/text file or a comma list (one per step)"
        ),
        "smoothing": Param(
            0.1, "median-filter width as a fraction of the record (0 = none)", low=0.0, high=1.0
        ),
        "power": Param(
            2.0,
            "w_t = g_t^-power · sum_{p>t} g_p^-power: 2 for SGD (l2 norms), 1 for Adam (l1)",
            low=0.0,
            low_open=True,
        ),
    }
    peak: float = 1e-3
    warmup: int = 0
    grad_norms: tuple[float, ...] = (1.0, 1.0)
    smoothing: float = 0.1
    power: float = 2.0
    multipliers: tuple[float, ...] = field(default=(), init=False, repr=False, compare=False)

    def coerce(self, key: str, spec: Param, value: Any) -> Any:
        return load_norms(value) if key == "grad_norms" else super().coerce(key, spec, value)

    def check(self) -> None:
        n = self.grad_norms
        need(len(n) >= 2, f"grad_norms has {len(n)} values: need at least 2")
        need(all(math.isfinite(v) and v > 0 for v in n), "grad_norms must all be finite and > 0")
        need(self.warmup <= len(n), f"warmup={self.warmup} is longer than the record ({len(n)} steps)")
        object.__setattr__(self, "multipliers", tuple(refine(n, self.smoothing, self.power)))

    def lr(self, step: int) -> float:
        if step >= len(self.multipliers):
            return 0.0
        rate = self.peak * self.multipliers[step]
        return warmup_value(step, self.warmup, rate) if step < self.warmup else rate
