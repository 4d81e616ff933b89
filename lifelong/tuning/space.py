"""Search spaces built from declared parameters (`Param`), restricted or overridden by a YAML file.

Default space of a strategy (what `lifelong tune` searches when --space says nothing):
  - lr in [1e-3, 0.1] (always log unless --space says log: false), epochs in [1, 3], batch_size in
    {16, 32, 64} (the run settings);
  - each float hyperparameter the strategy declares (unless it says `tuned=False`): its `search` range if it
    declares one; else its allowed range when both ends are bounded; else, when only a lower bound of 0 (or none)
    is declared and the default is positive, [default / 10, default * 10] clipped to the allowed range (the
    authors' default at the centre of two decades). Log scale: the parameter's `log` flag, else automatic when the
    range is positive and spans two decades (`Param.log_scale`). A float whose default is 0 and whose range is
    unbounded has no scale to search: it is refused, naming it, until --space gives it a range or a fixed value.
  - integers (memory and batch sizes, sample counts, widths), switches and named choices stay at their defaults:
    sizes and budgets are part of the scenario being compared (a bigger memory always helps), so they are tuned
    only when --space names them.

YAML (--space): a mapping of names to
  - a value (`epochs: 1`): fixed;
  - a list (`ewc_lambda: [10, 100, 1000]`): categorical;
  - a mapping `{low: 1e-3, high: 0.1, log: true}` (`log` optional: automatic as above): a range; `{}` or a mapping
    without `low`/`high` takes the default range (refused for an unbounded parameter without one).
  A top-level name applies to every tuned strategy that has it; `STRATEGY: {name: ...}` applies to one strategy.
  Any run setting may be fixed (`hidden: "64"`); lr, epochs, batch_size, momentum and weight_decay may be searched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifelong.errors import LifelongError, unknown_name
from lifelong.params import Param

SEARCHABLE_SETTINGS = ("lr", "epochs", "batch_size", "momentum", "weight_decay")
COMMON_DEFAULTS: dict[str, Any] = {"lr": (1e-3, 0.1), "epochs": (1, 3), "batch_size": [16, 32, 64]}


@dataclass(frozen=True)
class Dim:
    """One searched or fixed name: kind is float, int, categorical or fixed."""

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"fixed": self.value}
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}

    def distribution(self) -> Any:
        """The Optuna distribution of a searched dimension."""
        import optuna

        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.CategoricalDistribution(list(self.choices))


def declared(strategy: str) -> dict[str, Param]:
    """The hyperparameters of `strategy` (a composition's as `part.name`), as make_strategy addresses them."""
    from lifelong.strategies import STRATEGIES

    classes = [STRATEGIES.get(name.strip()) for name in strategy.split("+")]
    if len(classes) == 1:
        return dict(classes[0].params)
    return {f"{c.name}.{k}": p for c in classes for k, p in c.params.items()}


def range_dim(name: str, param: Param, low: Any, high: Any, log: bool | None) -> Dim:
    """A range checked against the parameter's allowed range; log by the flag given, else the parameter's rule."""
    kind = param.type
    if kind not in (int, float):
        raise LifelongError(f"--space {name}: a range needs a number parameter; give a list of choices instead")
    low, high = param.coerce(name, low), param.coerce(name, high)
    if not low < high:
        raise LifelongError(f"--space {name}: low ({low:g}) must be below high ({high:g})")
    use_log = param.log_scale(low, high) if log is None else bool(log)
    if use_log and low <= 0:
        raise LifelongError(f"--space {name}: a log-scale range needs low > 0, got {low:g}")
    return Dim("int" if kind is int else "float", low, high, use_log)


def default_dim(name: str, param: Param, common: Any = None) -> Dim:
    """The default search range of one parameter (see the module's docstring), or one line saying to give one."""
    if common is not None:
        if isinstance(common, list):
            return Dim("categorical", choices=tuple(common))
        return range_dim(name, param, common[0], common[1], None)
    if param.search is not None:
        return range_dim(name, param, param.search[0], param.search[1], None)
    if param.type is float and param.low is not None and param.high is not None and math.isfinite(param.high):
        return range_dim(name, param, param.low, param.high, None)
    if param.type is float and param.high is None and (param.low is None or param.low <= 0) and param.default > 0:
        low = param.default / 10
        return range_dim(name, param, low, param.default * 10, None)
    raise LifelongError(f"{name} has no default search range (allowed {param.describe_range()}, default "
                        f"{param.default!r}): give it a range or a fixed value in --space, e.g. "
                        f"'{name}: {{low: ..., high: ...}}' or '{name}: {param.default!r}'")


def default_space(strategy: str, skip: Any = ()) -> dict[str, Dim]:
    """What is searched for `strategy` when --space says nothing (see the module's docstring); names in `skip`
    (given by --space) are left out."""
    from lifelong.training.config import SETTINGS

    space = {name: default_dim(name, SETTINGS[name], common) for name, common in COMMON_DEFAULTS.items()
             if name not in skip}
    for name, param in declared(strategy).items():
        if param.type is float and param.tuned and name not in skip:
            space[name] = default_dim(name, param)
    return space


def entry_dim(name: str, param: Param, entry: Any) -> Dim:
    """One --space entry as a Dim: a value (fixed), a list (categorical) or a mapping (a range)."""
    if isinstance(entry, list):
        if not entry:
            raise LifelongError(f"--space {name}: an empty list of choices")
        values = tuple(dict.fromkeys(param.coerce(name, v) for v in entry))
        return Dim("categorical", choices=values) if len(values) > 1 else Dim("fixed", value=values[0])
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"low", "high", "log"}
        if unknown:
            raise LifelongError(f"--space {name}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (allowed: "
                                "low, high, log)")
        if "low" not in entry and "high" not in entry:
            dim = default_dim(name, param, COMMON_DEFAULTS.get(name))
            if "log" in entry and dim.kind in ("float", "int"):
                return range_dim(name, param, dim.low, dim.high, entry["log"])
            return dim
        if "low" not in entry or "high" not in entry:
            raise LifelongError(f"--space {name}: give both low and high")
        log = entry.get("log")
        if log is not None and not isinstance(log, bool):
            raise LifelongError(f"--space {name}: log must be true or false, not {log!r}")
        return range_dim(name, param, entry["low"], entry["high"], log)
    return Dim("fixed", value=param.coerce(name, entry))


def build_space(strategy: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Dim]:
    """The space of `strategy`: the default one, with `overrides` (parsed --space YAML) applied."""
    from lifelong.training.config import SETTINGS

    overrides = dict(overrides or {})
    params = declared(strategy)
    names = {**params, **SETTINGS}
    entries: dict[str, Any] = {}
    for key, entry in overrides.items():
        if is_strategy(key) and isinstance(entry, Mapping) and key not in names:
            if key == strategy:
                for name in entry:
                    if name not in names:
                        raise unknown_name(f"--space {key}: name", name, list(names))
                entries.update(entry)
            continue
        entries[key] = entry
    space = default_space(strategy, skip=entries)
    for name, entry in entries.items():
        if name in ("strategy", "seed", "scenario"):
            raise LifelongError(f"--space {name}: set by `lifelong tune` itself (--strategies, --seeds, --scenario)")
        if name in params:
            space[name] = entry_dim(name, params[name], entry)
        elif name in SETTINGS:
            if name not in SEARCHABLE_SETTINGS and isinstance(entry, (list, Mapping)):
                raise LifelongError(f"--space {name}: only {', '.join(SEARCHABLE_SETTINGS)} can be searched; "
                                    "other settings can be fixed")
            space[name] = entry_dim(name, SETTINGS[name], entry)
    return space


def is_strategy(key: str) -> bool:
    """Whether a --space key names a strategy, by name or import path, or a composition of them (a section)."""
    from lifelong.strategies import STRATEGIES

    try:
        for part in str(key).split("+"):
            STRATEGIES.get(part.strip())
    except LifelongError:
        return False
    return True


def validate_overrides(strategies: list[str], overrides: Mapping[str, Any]) -> None:
    """Every top-level name of --space is a setting or a hyperparameter of at least one tuned strategy."""
    from lifelong.training.config import SETTINGS

    known = set(SETTINGS) | {k for s in strategies for k in declared(s)}
    for key, entry in overrides.items():
        if is_strategy(key) and isinstance(entry, Mapping) and key not in known:
            if key not in strategies:
                raise LifelongError(f"--space has a section for {key}, which is not tuned (--strategies "
                                    f"{','.join(strategies)})")
            continue
        if key not in known:
            raise unknown_name("--space name (a run setting or a hyperparameter of the tuned strategies)", key,
                               sorted(known))


def split_values(strategy: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run settings, strategy hyperparameters) of one chosen setting."""
    params = declared(strategy)
    settings = {k: v for k, v in values.items() if k not in params}
    return settings, {k: v for k, v in values.items() if k in params}


def fixed_values(space: Mapping[str, Dim]) -> dict[str, Any]:
    return {k: d.value for k, d in space.items() if d.kind == "fixed"}


def sample(trial: Any, space: Mapping[str, Dim]) -> dict[str, Any]:
    """Every value of one trial: the sampled ones (through `trial`) and the fixed ones."""
    values = {}
    for name, dim in space.items():
        if dim.kind == "fixed":
            values[name] = dim.value
        elif dim.kind == "float":
            values[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        elif dim.kind == "int":
            values[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[name] = trial.suggest_categorical(name, list(dim.choices))
    return values


def load_space_file(path: str) -> dict[str, Any]:
    """The --space YAML as a mapping (one clear line for a missing, invalid or non-mapping file)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f.read(1 << 20))
    except OSError as err:
        raise LifelongError(f"cannot read --space {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise LifelongError(f"--space {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    data = {} if data is None else data
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise LifelongError(f"--space {path} must hold a mapping of names to a value, a list or {{low, high, log}}")
    return {k.replace("-", "_"): v for k, v in data.items()}
