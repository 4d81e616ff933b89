"""Decay shapes shared by WSD, WSD-S, WSDC, decay branches: rate from `high` to `low` as u goes 0 -> 1."""

from __future__ import annotations

import math

SHAPES = ("linear", "cosine", "1-sqrt", "exp", "inverse")
SHAPE_HELP = (
    "decay shape: linear 1-u, cosine (1+cos(pi u))/2, 1-sqrt 1-sqrt(u), "
    "exp geometric high*(low/high)^u, inverse high/(1+(high/low-1)u) (exp and inverse need min-lr > 0)"
)
NEEDS_POSITIVE_FLOOR = ("exp", "inverse")


def decay(shape: str, u: float, high: float, low: float) -> float:
    """The rate at progress `u` in [0, 1] of a decay from `high` (u=0) to `low` (u=1).

    linear / cosine / 1-sqrt use low + (high-low)·g(u). exp is the geometric interpolation (the infinite
    schedule's annealing formula). inverse is WSD-S's inverse-proportional decay high/(1+(r-1)u), r=high/low,
    without the reference code's max(c, 1) so that it starts exactly at `high` like the other shapes.
    """
    u = min(max(u, 0.0), 1.0)
    if shape == "linear":
        return low + (high - low) * (1.0 - u)
    if shape == "cosine":
        return low + (high - low) * 0.5 * (1.0 + math.cos(math.pi * u))
    if shape == "1-sqrt":
        return low + (high - low) * (1.0 - math.sqrt(u))
    if high <= 0.0 or high == low:
        return high
    if shape == "exp":
        return high * (low / high) ** u
    if shape == "inverse":
        if u == 0.0:  # high/low may overflow for a tiny floor; inf * 0 would be NaN
            return high
        return max(low, high / (1.0 + (high / low - 1.0) * u))
    raise ValueError(f"unknown decay shape {shape!r}")
