"""lifelong: continual learning for PyTorch.

    from lifelong import RunConfig, run
    result = run(RunConfig(scenario="split-digits", strategy="er"), "runs/example")
"""

__version__ = "0.1.0"

from lifelong.errors import LifelongError  # noqa: E402
from lifelong.training.config import RunConfig  # noqa: E402
from lifelong.training.runner import compare, resume, run  # noqa: E402

__all__ = ["LifelongError", "RunConfig", "compare", "resume", "run", "__version__"]
