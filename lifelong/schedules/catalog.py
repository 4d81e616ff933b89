"""The schedule registry (CLI name -> Schedule class) and `make_schedule`, which builds one from values."""

from __future__ import annotations

from typing import Any

from lifelong.params import resolve
from lifelong.registry import Registry
from lifelong.schedules.base import Schedule
from lifelong.schedules.basic import Constant, Cosine, Linear, RepeatedCosine
from lifelong.schedules.infinite import Infinite
from lifelong.schedules.refined import Refined
from lifelong.schedules.wsd import WSD, WSDC, WSDS

SCHEDULES: Registry[type[Schedule]] = Registry("schedule")
for _cls in (Constant, Linear, Cosine, RepeatedCosine, WSD, WSDS, WSDC, Infinite, Refined):
    SCHEDULES.add(_cls.name, _cls)


def make_schedule(name: str, total_steps: int | None = None, **params: Any) -> Schedule:
    """Build schedule `name` from hyperparameter values (strings allowed, e.g. from the command line).

    Unknown names and out-of-range values raise LifelongError naming the parameter. With `total_steps`
    the schedule is also checked against the run and run-length fields left at 0 take that value.
    """
    cls = SCHEDULES.get(name)
    given = {key.replace("-", "_"): value for key, value in params.items()}
    schedule = cls(**resolve(cls.params, given, f"schedule '{name}'"))
    return schedule if total_steps is None else schedule.bind(total_steps)
