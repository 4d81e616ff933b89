"""The training engine, run configuration, and running / resuming / comparing runs.

`Engine` and `RunConfig` are imported on first use: importing one module of this package (e.g. the config)
does not load the engine and every strategy."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"Engine": "lifelong.training.engine", "RunConfig": "lifelong.training.config"}

if TYPE_CHECKING:
    from lifelong.training.config import RunConfig
    from lifelong.training.engine import Engine

__all__ = ["Engine", "RunConfig"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lifelong.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
