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

    Switching back from eval mode recomputes the training point by interpolation, which rounds (about 1e-7
    per round trip); so the training-point parameters are snapshotted on entry and copied back bit for bit
    after `optimizer.train()`: evaluating never changes training. Changes made to the parameters inside are
    therefore discarded (evaluate and save there, do not train). A no-op for ordinary optimizers; leaves an
    optimizer that was already in eval mode in eval mode.
    """
    if not has_modes(optimizer):
        yield optimizer
        return
    groups = getattr(optimizer, "param_groups", [])
    was_training = bool(groups and groups[0].get("train_mode", True))
    params = [p for group in groups for p in group["params"]] if was_training else []
    with torch.no_grad():
        snapshot = [p.detach().clone() for p in params]
    optimizer.eval()
    try:
        yield optimizer
    finally:
        if was_training:
            optimizer.train()
            with torch.no_grad():
                for p, saved in zip(params, snapshot, strict=True):
                    p.copy_(saved)


def training_point(optimizer: Any, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """A copy of `model`'s state at the training point, for optimizers with modes (None for others).

    Call it in train mode, outside `eval_mode`, and store it in a checkpoint next to the eval-mode weights:
    `resume_training_point` then continues from exactly these weights instead of re-deriving them from the
    eval-mode ones (which rounds, so a resumed run would drift from an uninterrupted one).
    """
    if not has_modes(optimizer):
        return None
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def resume_training_point(
    optimizer: Any, model: torch.nn.Module, saved: dict[str, torch.Tensor] | None
) -> None:
    """After loading a checkpoint written in eval mode: back to train mode, at the saved training point.

    Without `saved` (an older checkpoint) the training point is re-derived by `optimizer.train()`.
    """
    if has_modes(optimizer):
        optimizer.train()
        if saved is not None:
            model.load_state_dict(saved)
