"""Declared hyperparameters: a name, a type, a default and an allowed range, validated with one clear message."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifelong.errors import LifelongError, unknown_name

MAX_INT = 2**53  # no integer setting may exceed this (beyond it, floats and seeds lose exactness)


@dataclass(frozen=True)
class Param:
    """One hyperparameter. `low`/`high` bound numbers (inclusive unless `low_open`); `choices` bounds strings.

    For tuning (`lifelong tune`): `search` is the range searched by default when the allowed range is unbounded
    or wider than worth searching; `log` says whether it is searched on a log scale (None: automatic, see
    `log_scale`); `tuned=False` keeps it out of the default search space (a setting only one mode of the method
    reads, such as a temperature of a non-default form)."""

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    log: bool | None = None
    search: tuple[float, float] | None = None
    tuned: bool = True

    def log_scale(self, low: float, high: float) -> bool:
        """Whether [low, high] is searched on a log scale: the declared `log` flag, else automatically when
        the range is positive and spans two decades or more (high / low >= 100: strengths, learning rates)."""
        if self.log is not None:
            return self.log
        return low > 0 and high / low >= 100

    @property
    def type(self) -> type:
        return type(self.default)

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + "|".join(self.choices)
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return "text; a list as comma-separated text, e.g. '9,8,7'"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        infinite_default = isinstance(self.default, (int, float)) and math.isinf(self.default)
        open_high = self.high is None and not infinite_default  # inf itself is refused
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if open_high else ']'}"

    def coerce(self, name: str, value: Any) -> Any:
        """Convert `value` (possibly a string from the command line) and check the range.

        Only unambiguous conversions are made: a bool from a bool, 0/1 or a yes/no word; an int from an int, an
        integral finite float or a numeric string (never from a bool); a float from a number or a numeric string;
        a str from a str or a number. Anything else (None, lists, `seed: true`, `shuffle_classes: 2`) is refused.
        Floats must be finite unless the default is infinite."""
        kind = self.type
        try:
            value = self.convert(value)
        except (TypeError, ValueError, OverflowError):
            allowed = "true or false" if kind is bool else self.describe_range()
            raise LifelongError(f"{name}={value!r} is not a valid {kind.__name__} (allowed: {allowed})") from None
        if self.choices is not None and value not in self.choices:
            raise LifelongError(f"{name}={value!r} is not allowed: expected {self.describe_range()}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bad = math.isnan(value) or (math.isinf(value) and not math.isinf(float(self.default)))
            bad = bad or (isinstance(value, int) and abs(value) > MAX_INT)
            if self.low is not None:
                bad = bad or value < self.low or (self.low_open and value == self.low)
            if self.high is not None:
                bad = bad or value > self.high
            if bad:
                raise LifelongError(f"{name}={value!r} is out of range: allowed {self.describe_range()}")
        return value

    def convert(self, value: Any) -> Any:
        """`value` as this parameter's type; TypeError/ValueError when the conversion would be a guess."""
        kind = self.type
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "yes", "no"):
                return value.strip().lower() in ("1", "true", "yes")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if isinstance(value, bool):
            raise TypeError
        if kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            if isinstance(value, str):
                return int(value)
            raise TypeError
        if kind is float:
            if isinstance(value, (int, float, str)):
                return float(value)
            raise TypeError
        if kind is str:
            if isinstance(value, (str, int, float)):
                return str(value)
            raise TypeError
        return value


def resolve(spec: Mapping[str, Param], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Defaults of `spec` overridden by `given`, each checked; unknown names get a suggestion."""
    for name in given:
        if name not in spec:
            raise unknown_name(f"hyperparameter of {owner}", name, spec)
    return {name: p.coerce(name, given.get(name, p.default)) for name, p in spec.items()}
