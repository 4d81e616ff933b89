"""Declared hyperparameters: a name, a type, a default and an allowed range, validated with one clear message."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifelong.errors import LifelongError, unknown_name


@dataclass(frozen=True)
class Param:
    """One hyperparameter. `low`/`high` bound numbers (inclusive unless `low_open`); `choices` bounds strings."""

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + "|".join(self.choices)
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}]"

    def coerce(self, name: str, value: Any) -> Any:
        """Convert `value` (possibly a string from the command line) and check the range."""
        kind = self.type
        try:
            if kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError
                    value = value.lower() in ("1", "true", "yes")
                value = bool(value)
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = int(value)
            elif kind is float:
                value = float(value)
            elif kind is str:
                value = str(value)
        except (TypeError, ValueError):
            raise LifelongError(f"{name}={value!r} is not a valid {kind.__name__}") from None
        if self.choices is not None and value not in self.choices:
            raise LifelongError(f"{name}={value!r} is not allowed: expected {self.describe_range()}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bad = math.isnan(value)
            if self.low is not None:
                bad = bad or value < self.low or (self.low_open and value == self.low)
            if self.high is not None:
                bad = bad or value > self.high
            if bad:
                raise LifelongError(f"{name}={value!r} is out of range: allowed {self.describe_range()}")
        return value


def resolve(spec: Mapping[str, Param], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Defaults of `spec` overridden by `given`, each checked; unknown names get a suggestion."""
    for name in given:
        if name not in spec:
            raise unknown_name(f"hyperparameter of {owner}", name, spec)
    return {name: p.coerce(name, given.get(name, p.default)) for name, p in spec.items()}
