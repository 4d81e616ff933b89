"""Keyword arguments given as text (`key=value,...` settings) typed by the defaults of the function they go to."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from lifelong.errors import LifelongError, unknown_name

MAX_WORKERS = 256  # worker processes of compare, tune and the reproduce targets
MAX_STACK = 1024  # runs trained at once as one stack (lifelong.training.stacked)


def check_count(label: str, value: Any, low: int, high: int) -> int:
    """`value` as an integer in [low, high], else one line naming it: `label` is how the user gave it
    ("workers=" from Python, "--workers " on the command line)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LifelongError(f"{label}{value!r} is out of range: allowed an integer in [{low}, {high}]")
    return value


def accepted_parameters(fn: Callable[..., Any], shared: Sequence[str] = ()) -> dict[str, inspect.Parameter]:
    """The keyword parameters of `fn` other than `shared` (those the caller always passes itself)."""
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if n not in shared and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def typed_arguments(fn: Callable[..., Any], values: dict[str, Any], what: str,
                    shared: Sequence[str] = ()) -> dict[str, Any]:
    """`values` (strings from the command line, or values) converted to the types of `fn`'s defaults.

    An unknown name or a value that does not convert is one LifelongError line; `what` names the parameters in
    it (e.g. "parameter of si-blurry scenarios"). Parameters without a default, or with a string or None default,
    take the value as given."""
    accepted = accepted_parameters(fn, shared)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in accepted:
            if not accepted:
                raise LifelongError(f"no {what} exists (got {key!r})")
            raise unknown_name(what, key, list(accepted))
        default = accepted[key].default
        if (not isinstance(value, str) or default is inspect.Parameter.empty or default is None
                or isinstance(default, str)):
            out[key] = value
            continue
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif isinstance(default, (tuple, list)):
                out[key] = type(default)(type(default[0])(v) if default else v for v in value.split(","))
            else:
                out[key] = type(default)(value)
        except ValueError:
            raise LifelongError(f"{key}={value!r} must be {type(default).__name__}") from None
    for key, value in out.items():  # nan and inf parse as floats, and mean nothing as a setting
        if isinstance(value, float) and not math.isfinite(value):
            raise LifelongError(f"{key}={value!r} must be a finite number ({what})")
    return out
