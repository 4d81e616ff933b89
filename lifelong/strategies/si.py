"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017): importance from each parameter's path integral.

During experience t every step adds  omega_i += -g_i * delta_i, where g is the gradient of the task loss alone
(without the penalty, as the authors' code does with its unregularised gradients) and delta the parameter change
the optimizer made. At the end of the experience  Omega_i += omega_i / ((theta_i(t) - theta_i(t-1))^2 + xi), omega
is reset and theta(t) becomes the anchor; the penalty is  c * sum_i Omega_i (theta_i - theta_i(t))^2  (no 1/2, as
in the paper's surrogate loss). The accumulated Omega is clamped at 0, as the authors' code
(ganguli-lab/pathint protocols.py: tf.nn.relu around the update), so the penalty never pushes a parameter away
from its anchor (a few hundred entries of a task's omega are negative; the running sum stayed positive in
task-split-fashion-mnist, where the clamp changes nothing). Deviations: none known.
Default c = 0.5 (xi = 1e-3), seed 0: task-split-fashion-mnist final accuracy 95.5 vs naive 93.5, forgetting 4.5
vs 6.9 (c = 1: 97.0 / 2.6, but it diverges on the class-incremental split-fashion-mnist: Omega reaches ~280 there,
and SGD with momentum 0.9 at lr 0.01 is unstable once 2 c Omega lr > 3.8). Larger c or learning rates can
diverge; the engine then stops with one line.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, register
from lifelong.strategies.regularization import QuadraticAnchor


class PathSteps:
    """Each step's task-loss gradient g and parameter change delta, the terms of SI's (and RWalk's) path integral
    -sum g * delta: `record` before the optimizer step, `take` after it."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Tensor, Tensor, Tensor]] = []  # (name, parameter, before, task gradient)

    def record(self, model: torch.nn.Module, grads: Gradients) -> None:
        names = {id(p): n for n, p in model.named_parameters()}
        self.pending = [(names[id(p)], p, p.detach().clone(), g)
                        for p, g in zip(grads.params, grads.task, strict=True) if g is not None]

    def take(self) -> list[tuple[str, Tensor, Tensor]]:
        """(name, task gradient, parameter change) of the step just taken; empty if none was recorded."""
        steps = [(name, g, p.detach() - old) for name, p, old, g in self.pending]
        self.pending = []
        return steps


@register
class SI(QuadraticAnchor):
    name = "si"
    description = "synaptic intelligence: quadratic penalty weighted by each parameter's path integral"
    params = {
        "si_c": Param(0.5, "penalty strength c", low=0.0),
        "xi": Param(1e-3, "damping xi of the importance denominator", low=0.0, low_open=True),
    }
    neutral = {"si_c": 0.0}
    strength_param = "si_c"
    penalty_scale = 1.0
    separate_gradients = True

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.omega: dict[str, Tensor] = {}
        self.start: dict[str, Tensor] = {}  # parameters at the start of the experience
        self.path = PathSteps()

    def begin_experience(self, exp: Experience) -> None:
        self.start = self.snapshot()
        self.omega = {k: torch.zeros_like(v) for k, v in self.start.items()}

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        if self.strength != 0.0:
            self.path.record(self.ctx.model, grads)

    def after_step(self, batch: Batch, out: Outputs) -> None:
        for name, g, delta in self.path.take():
            self.omega[name].sub_(g * delta)

    def end_experience(self, exp: Experience) -> None:
        if self.strength == 0.0:
            return
        end = self.snapshot()
        new = {k: self.omega[k] / ((end[k] - self.start[k]).pow(2) + self.hp["xi"]) for k in end}
        total = {k: (v if not self.importances else self.importances[0][k] + v).clamp_min(0) for k, v in new.items()}
        self.importances, self.anchors = [total], [end]
        self.consolidate()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "omega": self.omega, "start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.omega, self.start = state["omega"], state["start"]
