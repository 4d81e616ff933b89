"""The training engine, run configuration, and running / resuming / comparing runs."""

from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine

__all__ = ["Engine", "RunConfig"]
