"""TAME, task-agnostic continual learning with multiple experts (Zhu et al.; specification: methods.md section
13.1, itself a reconstruction: the paper and code were not read for this file). Works with hidden boundaries:
no hook here reads the experience boundaries or task ids.

    experts E_1..E_K (copies of the model; only the used ones take part), active expert a, a window of the last
    `window` batch losses of E_a, a reservoir memory of (sample, id of the expert that learned it), a selector
    network over expert ids
    each step, new batch (x, y):
        l = CE(E_a(x), y)                             # before the update (the engine's forward)
        shift if the window is full and l > mean(window) + z * std(window) on `patience` consecutive batches
        on a shift: each used expert e's loss l_e on the batch; the experts with l_e <= mean_e + z std_e (their
            own window when they were last active) are "in distribution": switch to the one with the lowest
            loss; if none, spawn a new expert (a fresh initialisation, or a copy of E_a with `spawn=copy`);
            reset the window
        a batch above the threshold that does not yet complete a shift (a suspected shift) does not train E_a;
        otherwise train E_a on CE(E_a(x), y); train the selector on (x -> a) and a memory batch (x_m -> e_m);
        add (x, a) to the memory, the loss to the window
    predict: each test sample goes to the expert the selector picks (argmax over the used experts)

Model growth: the engine only grows the model at experience starts (`adapt_model`), so the model is wrapped once
at the first experience into `Experts` holding `max_experts` pre-allocated copies of the initial model and the
selector; all their parameters are in the optimizer from the start. Unused experts get no gradient (SGD/Adam
skip parameters without one), so they stay at the initial weights: "fresh" spawning is switching to the next
unused slot, "copy" spawning copies the active expert's weights into it. The active id and the number used are
buffers of the model (checkpointed with it); the windows are the strategy's state. When all K slots are used,
a shift switches to the expert with the lowest loss.

Defaults: window 50, patience 5 (docs/zoo/tame.md). With window 20 and patience 1 the z-test fired 47 times
in the 1875 steps of Split-FashionMNIST (4 true boundaries): per-batch CE at batch 32 is heavy-tailed, so the
one-sided Gaussian tail of z = 3 does not hold, and the 6 experts were used up by the first experience and a
half. Until the fix, the batches of a streak (suspected but not yet confirmed) trained the old expert: with
patience 5 its head learned the new classes from 4 batches and lost its own experience (accuracy of the expert
of experience 2 on it: 5%).

Choices (unverified against the paper; no code of the authors was found): one reservoir memory shared by all
experts, each row tagged with its expert (not one buffer per expert); the selector is a one-hidden-layer MLP on
the flattened prepared inputs; the population standard deviation of the window; a switch back to an old expert
resets its window too.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import NEW, Batch, Outputs, register
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase


class ShiftDetector:
    """One-sided z-test of a batch loss against a sliding window of the previous ones."""

    def __init__(self, window: int, z: float, patience: int = 1) -> None:
        self.window, self.z, self.patience = window, z, patience
        self.values: list[float] = []
        self.streak = 0

    def stats(self) -> tuple[float, float]:
        t = torch.tensor(self.values, dtype=torch.float64)
        return float(t.mean()), float(t.std(unbiased=False))

    def threshold(self) -> float:
        """mean + z * std of the window (inf while the window is not full)."""
        if len(self.values) < self.window:
            return float("inf")
        mean, std = self.stats()
        return mean + self.z * std

    def check(self, loss: float) -> bool:
        """Whether `loss` completes a shift (above the threshold on `patience` consecutive batches); a loss
        that is not a shift joins the window."""
        if loss > self.threshold():
            self.streak += 1
            if self.streak >= self.patience:
                return True
            return False
        self.streak = 0
        self.values = [*self.values[-(self.window - 1):], loss] if self.window > 1 else [loss]
        return False

    def reset(self) -> None:
        self.values, self.streak = [], 0


def select_expert(losses: Tensor, thresholds: Tensor) -> int:
    """The in-distribution expert (loss <= its threshold) with the lowest loss, or -1 if there is none."""
    ok = losses <= thresholds
    if not bool(ok.any()):
        return -1
    return int(losses.masked_fill(~ok, float("inf")).argmin())


class Experts(nn.Module):
    """`count` copies of a model and a selector over them; the forward is the active expert's."""

    def __init__(self, model: nn.Module, count: int, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.selector = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, count))
        self.experts = nn.ModuleList([model] + [copy.deepcopy(model) for _ in range(count - 1)])
        self.register_buffer("active", torch.zeros((), dtype=torch.long))
        self.register_buffer("used", torch.ones((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        return self.experts[int(self.active)](x)

    def route(self, x: Tensor) -> Tensor:
        """Expert id of each row (argmax of the selector over the used experts)."""
        used = int(self.used)
        if used == 1:
            return torch.zeros(len(x), dtype=torch.long, device=x.device)
        return self.selector(x)[:, :used].argmax(1)


@register
class TAME(ReplayBase):
    name = "tame"
    task_free = True
    family = "isolation"
    composable = False
    description = "task-agnostic experts: loss-jump shift detection spawns/switches experts, a selector routes"
    params = {
        **BUFFER_PARAMS,
        "z": Param(3.0, "shift when the loss exceeds the window mean by z standard deviations", low=0.0),
        "window": Param(50, "batch losses in the sliding window", low=2),
        "patience": Param(5, "consecutive batches above the threshold for a shift", low=1),
        "max_experts": Param(6, "experts pre-allocated in the model", low=1, high=64),
        "spawn": Param("fresh", "a new expert starts from the initial weights or a copy of the active one",
                       choices=("fresh", "copy")),
        "selector_hidden": Param(128, "hidden width of the selector", low=1),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.detector = ShiftDetector(self.hp["window"], self.hp["z"], self.hp["patience"])
        self.windows: dict[int, list[float]] = {}  # each expert's window when it was last active
        self.shifts: list[int] = []  # global step of each detected shift (for inspection)
        self.steps = 0

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        if isinstance(model, Experts):
            return model
        dim = 1
        for s in self.ctx.stream[0].data.input_shape:
            dim *= int(s)
        return Experts(model, self.hp["max_experts"], dim, self.hp["selector_hidden"])

    def thresholds(self, count: int) -> Tensor:
        out = torch.full((count,), float("-inf"), dtype=torch.float64)
        for e, values in self.windows.items():
            if e < count and len(values) >= 2:
                t = torch.tensor(values, dtype=torch.float64)
                out[e] = t.mean() + self.hp["z"] * t.std(unbiased=False)
        return out

    def on_shift(self, model: Experts, x: Tensor, y: Tensor) -> None:
        active, used = int(model.active), int(model.used)
        self.windows[active] = list(self.detector.values)
        with torch.no_grad():
            losses = torch.tensor([float(self.ctx.cross_entropy(model.experts[e](x), y)) for e in range(used)],
                                  dtype=torch.float64)
        chosen = select_expert(losses, self.thresholds(used))
        if chosen < 0 and used < len(model.experts):
            chosen = used
            model.used.fill_(used + 1)
            if self.hp["spawn"] == "copy":
                with torch.no_grad():
                    for dst, src in zip(model.experts[chosen].parameters(), model.experts[active].parameters(),
                                        strict=True):
                        dst.copy_(src)
        elif chosen < 0:
            chosen = int(losses.argmin())
        model.active.fill_(chosen)
        self.detector.reset()
        self.shifts.append(self.steps)

    def training_batch(self, batch: Batch) -> Batch:
        old = self.replay()
        if old is not None:
            batch.add(f"{self.name}.selector", self.ctx.segment(old["raw"], old["y"], expert=old["expert"]))
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        model: Experts = self.ctx.model  # type: ignore[assignment]
        new = batch.new
        loss = self.ctx.cross_entropy(out[NEW], new.y)
        if self.detector.check(float(loss.detach())):
            before = int(model.active)
            self.on_shift(model, new.x, new.y)
            if int(model.active) != before:
                loss = self.ctx.cross_entropy(model(new.x), new.y)
        elif self.detector.streak > 0:
            loss = loss * 0.0  # a suspected shift (streak not yet confirmed): the active expert does not learn it
        return loss

    def penalty(self, batch: Batch, out: Outputs) -> Tensor:
        model: Experts = self.ctx.model  # type: ignore[assignment]
        used = int(model.used)
        xs, ids = [batch.new.x], [torch.full((len(batch.new),), int(model.active), device=batch.new.y.device)]
        name = f"{self.name}.selector"
        if name in batch:
            xs.append(batch[name].x)
            ids.append(batch[name].extras["expert"])
        logits = model.selector(torch.cat(xs))[:, :used]
        return F.cross_entropy(logits, torch.cat(ids))

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.steps += 1

    def observe(self, batch: Batch, out: Outputs) -> None:
        model: Experts = self.ctx.model  # type: ignore[assignment]
        ids = torch.full((len(batch.new),), int(model.active), dtype=torch.long, device=batch.new.y.device)
        self.memory.add(raw=batch.new.raw, y=batch.new.y, expert=ids)

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        if not isinstance(model, Experts):
            return model(x)
        used = int(model.used)
        if used == 1:
            return model.experts[0](x)
        route = model.route(x)
        logits = torch.stack([model.experts[e](x) for e in range(used)])
        return logits[route, torch.arange(len(x), device=x.device)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "values": list(self.detector.values), "streak": self.detector.streak,
                "windows": {str(k): list(v) for k, v in self.windows.items()}, "shifts": list(self.shifts),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.detector.values, self.detector.streak = list(state["values"]), int(state["streak"])
        self.windows = {int(k): list(v) for k, v in state["windows"].items()}
        self.shifts, self.steps = list(state["shifts"]), int(state["steps"])
