"""Continual-learning strategies; importing this package registers every built-in one."""

from lifelong.strategies import derpp, lwf, reference, regularization, replay  # noqa: F401
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
