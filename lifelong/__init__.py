"""lifelong: continual learning for PyTorch.

    from lifelong import RunConfig, run
    result = run(RunConfig(scenario="split-digits", strategy="er"), "runs/example")

The names below are imported on first use, so `import lifelong.cli` (and `lifelong --help`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "LifelongError": "lifelong.errors",
    "RunConfig": "lifelong.training.config",
    "compare": "lifelong.training.runner",
    "resume": "lifelong.training.runner",
    "run": "lifelong.training.runner",
}

if TYPE_CHECKING:
    from lifelong.errors import LifelongError
    from lifelong.training.config import RunConfig
    from lifelong.training.runner import compare, resume, run

__all__ = ["LifelongError", "RunConfig", "compare", "resume", "run", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lifelong' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
