"""Continual-learning strategies; importing this package registers every built-in one.

Every module of this package is imported here, so a new method is one file whose class is decorated with
`@register`: nothing else to edit.
"""

import importlib
import pkgutil

from lifelong.strategies.base import (
    STRATEGIES,
    Batch,
    Compose,
    Context,
    Gradients,
    Outputs,
    Segment,
    Strategy,
    make_strategy,
    register,
)

__all__ = ["STRATEGIES", "Batch", "Compose", "Context", "Gradients", "Outputs", "Segment", "Strategy",
           "make_strategy", "register"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
