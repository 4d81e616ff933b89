"""Schedule-free optimizers (Defazio et al. 2024) via the maintained `schedulefree` package, used correctly.

They keep two weight sequences: the training point and the averaged point that should be evaluated. The
optimizer must be in train mode while stepping and in eval mode whenever the model is evaluated or
checkpointed; `eval_mode` does that switch and puts it back. (Models with BatchNorm also need their running
statistics recomputed at the eval weights; see the schedulefree README.) Do not combine them with a decaying
ScheduleLR: the package's own `warmup_steps` replaces the schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from lifelong.errors import LifelongError

OPTIMIZERS = {"adamw": "AdamWScheduleFree", "sgd": "SGDScheduleFree"}
INSTALL_HINT = "pip install lifelong[schedulefree]"


def make_schedulefree(
    params: Iterable[Any], name: str = "adamw", lr: float = 2.5e-3, warmup_steps: int = 0, **kwargs: Any
) -> torch.optim.Optimizer:
    """A schedule-free optimizer ("adamw" or "sgd"), already in train mode. Extra kwargs go to the package."""
    if name not in OPTIMIZERS:
        raise LifelongError(f"name={name!r} is not allowed: expected one of {'|'.join(OPTIMIZERS)}")
    try:
        import schedulefree
    except ImportError:
        raise LifelongError(
            f"schedule-free optimizers need the 'schedulefree' package: {INSTALL_HINT}"
        ) from None
    optimizer = getattr(schedulefree, OPTIMIZERS[name])(params, lr=lr, warmup_steps=warmup_steps, **kwargs)
    optimizer.train()
    return optimizer


def has_modes(optimizer: Any) -> bool:
    """True for optimizers with train()/eval() weight modes (schedule-free ones)."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


@contextmanager
def eval_mode(optimizer: Any) -> Iterator[Any]:
    """Inside: the model holds the weights to evaluate and checkpoint. On exit: back to the previous mode.

    A no-op for ordinary optimizers. Leaves an optimizer that was already in eval mode in eval mode.
    """
    if not has_modes(optimizer):
        yield optimizer
        return
    groups = getattr(optimizer, "param_groups", [])
    was_training = bool(groups and groups[0].get("train_mode", True))
    optimizer.eval()
    try:
        yield optimizer
    finally:
        if was_training:
            optimizer.train()
