"""Learning-rate schedules as pure functions of the step, wrapped as torch LRSchedulers.

Budget-free schedules (WSD, WSD-S, WSDC, infinite), budget-known baselines (constant, linear, cosine,
repeated cosine), the gradient-norm refined schedule, experience-aware StreamSchedule, decay branches,
and schedule-free optimizer support.
"""

from lifelong.schedules.base import Schedule
from lifelong.schedules.basic import Constant, Cosine, Linear, RepeatedCosine
from lifelong.schedules.catalog import SCHEDULES, make_schedule
from lifelong.schedules.infinite import Infinite
from lifelong.schedules.lr_scheduler import ScheduleLR
from lifelong.schedules.refined import Refined, gradient_norms, refine
from lifelong.schedules.schedulefree_support import eval_mode, make_schedulefree
from lifelong.schedules.shapes import SHAPES, decay
from lifelong.schedules.stream import MODES, StreamSchedule
from lifelong.schedules.wsd import WSD, WSDC, WSDS, check_branch_floor, decay_branch

__all__ = [
    "MODES",
    "SCHEDULES",
    "SHAPES",
    "WSD",
    "WSDC",
    "WSDS",
    "Constant",
    "Cosine",
    "Infinite",
    "Linear",
    "Refined",
    "RepeatedCosine",
    "Schedule",
    "ScheduleLR",
    "StreamSchedule",
    "check_branch_floor",
    "decay",
    "decay_branch",
    "eval_mode",
    "gradient_norms",
    "make_schedule",
    "make_schedulefree",
    "refine",
]
