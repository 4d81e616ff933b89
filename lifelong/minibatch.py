"""Minibatch gradient descent for the auxiliary fits inside a method's algorithm.

The engine's loop (lifelong.training) trains the run's model on the stream. A few methods also solve a small
optimisation problem of their own at an experience's end, on other parameters and other data, whose result the
engine never steps: GDumb retrains a fresh network on its memory alone, BiC fits its two bias-correction parameters
on held-out logits, SLCA re-fits the classifier head on features sampled from per-class Gaussians. Those fits run
here, in one place, instead of each method writing its own zero_grad / backward / step loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

Epoch = tuple[Tensor, Callable[[Tensor], Tensor]]


def descend(optimizer: torch.optim.Optimizer, epochs: Iterable[Epoch], batch_size: int,
            rate: Callable[[int], float] | None = None, clip: float = 0.0) -> None:
    """For every epoch `(order, loss_of)`: one optimizer step on `loss_of(rows)` for each consecutive run of
    `batch_size` entries of `order`. `rate(step)`, when given, sets the learning rate before each step (step
    counted over all epochs). `clip` > 0: the gradient's global l2 norm is clipped to it before each step.
    `epochs` may be a generator: it is advanced after an epoch's last step, so it can resample data or step a
    per-epoch scheduler there. Gradients are on whatever the caller's context says."""
    step = 0
    with torch.enable_grad():
        for order, loss_of in epochs:
            for start in range(0, len(order), batch_size):
                if rate is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = rate(step)
                optimizer.zero_grad(set_to_none=True)
                loss_of(order[start:start + batch_size]).backward()
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
                optimizer.step()
                step += 1
