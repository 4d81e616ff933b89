"""GDumb (Prabhu et al. 2020, "GDumb: A Simple Approach that Questions Our Progress in Continual Learning").

    sampler (greedy, class-balanced), for every training sample (x, y) in stream order:
        if |M| < k:                       store (x, y)
        elif n_y < k / |classes seen|:    evict a random sample of the largest class; store (x, y)
    learner, whenever the model is evaluated:
        a fresh model (new initialisation), trained from scratch on M only; predict with it

Mapping onto the contract: every experience is "learned" by `fit_experience` (learns_by_sgd is False): its
training samples pass through the sampler in a random order (this strategy's own seeded generator), then a
fresh copy of the run's model is initialised and trained by SGD on the memory alone; `predict` scores with that
model. The engine's own model is never trained. The retrained model depends only on the memory and on a seed
drawn once when the run starts: the same memory gives the same predictions.

Training on the memory (as the authors' src/main.py and Mammoth's models/gdumb.py): SGD with momentum 0.9 and
weight decay 1e-6, the gradient's l2 norm clipped to `clip` (the authors' --clip 10: without it the retraining
diverged on split-fashion-mnist, a model at chance on task 0 after experience 1), batches of the run's batch
size, `epochs` passes, the first at lr/10 (warm-up), then cosine decay from `lr` to lr/100; the run's
cross-entropy (task-aware masking included). Deviations: no CutMix and no warm restarts (the paper's recipe,
which also trains for 256 epochs; the defaults here are sized for the library's short runs), and the memory is
refit after every experience (the paper retrains at every evaluation, Mammoth only after the last experience).
Randomness of the fresh initialisation: the modules' own `reset_parameters` under a forked, seeded torch RNG
(the global RNG state is restored afterwards).

The retraining is an auxiliary fit of the algorithm on another network (`lifelong.minibatch.descend`), not the
engine's loop: the engine's model is never stepped.

Cost: per experience, one pass of the sampler over its samples (a Python loop of integer bookkeeping) and
epochs * ceil(k / batch) SGD steps on the memory; a second copy of the model.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.minibatch import descend
from lifelong.params import Param
from lifelong.strategies.base import Strategy, register
from lifelong.strategies.retrieval import child_generator


class GreedyBalancedMemory:
    """GDumb's greedy class-balanced sampler over stored (compact) inputs."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.rng = random.Random(seed)
        self.size = 0
        self.store: dict[str, Tensor] = {}
        self.class_slots: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.size

    def slots_for(self, labels: list[int]) -> list[int]:
        slots = []
        for c in labels:
            mine = self.class_slots.setdefault(c, [])
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            elif len(mine) < self.capacity / len(self.class_slots):
                top = max(len(s) for s in self.class_slots.values())
                largest = sorted(k for k, s in self.class_slots.items() if len(s) == top)
                victims = self.class_slots[largest[self.rng.randrange(len(largest))]]
                slot = victims.pop(self.rng.randrange(len(victims)))
            else:
                slots.append(-1)
                continue
            mine.append(slot)
            slots.append(slot)
        return slots

    def add(self, raw: Tensor, y: Tensor) -> None:
        if not self.store:
            self.store = {"raw": raw.new_zeros((self.capacity, *raw.shape[1:])), "y": y.new_zeros(self.capacity)}
        chosen: dict[int, int] = {}
        for i, slot in enumerate(self.slots_for(y.tolist())):
            if slot >= 0:
                chosen[slot] = i
        if chosen:
            dest = torch.tensor(list(chosen), device=y.device)
            src = torch.tensor(list(chosen.values()), device=y.device)
            self.store["raw"][dest] = raw[src]
            self.store["y"][dest] = y[src]

    def counts(self) -> dict[int, int]:
        return {c: len(s) for c, s in self.class_slots.items() if s}

    def state_dict(self) -> dict[str, Any]:
        order = [slot for slots in self.class_slots.values() for slot in slots]
        return {"size": self.size, "store": self.store, "rng": self.rng.getstate(),
                "class_order": torch.tensor(order, dtype=torch.long)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.store = state["size"], dict(state["store"])
        self.rng.setstate(state["rng"])
        self.class_slots = {}
        labels = self.store["y"].tolist() if self.size else []
        for slot in state["class_order"].tolist():  # each class's slots in their order (victims index them)
            self.class_slots.setdefault(labels[slot], []).append(slot)


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every module re-initialised by its `reset_parameters`, under a forked RNG. A module
    whose own parameters are all frozen (`requires_grad=False`: a pretrained backbone the user froze) is kept
    as it is: retraining would not train it, so resetting it would leave random features."""
    net = copy.deepcopy(model)
    devices = [model_device(model)] if model_device(model).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for m in net.modules():
            own = list(m.parameters(recurse=False))
            if hasattr(m, "reset_parameters") and not (own and not any(q.requires_grad for q in own)):
                m.reset_parameters()
    return net


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@register
class GDumb(Strategy):
    name = "gdumb"
    description = "greedy class-balanced memory; a fresh model trained on the memory alone at every evaluation"
    family = "memory-retrain"
    composable = False  # replaces learning and prediction: composing it with others means nothing
    alone_because = "it replaces learning and prediction with a model retrained on its memory"
    params = {
        "buffer_size": Param(500, "samples kept in the memory", low=1),
        "epochs": Param(30, "passes over the memory when the model is retrained", low=1),
        "lr": Param(0.05, "peak learning rate of the retraining (SGD, momentum 0.9, cosine decay)", low=0.0,
                    low_open=True),
        "clip": Param(10.0, "the retraining's gradient l2 norm is clipped to this (the authors' 10; 0: off)", low=0.0),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        gen = child_generator(ctx.generator)
        self.memory = GreedyBalancedMemory(self.hp["buffer_size"], int(torch.randint(2**62, (1,), generator=gen)))
        self.seed = int(torch.randint(2**62, (1,), generator=gen))
        self.order_gen = child_generator(gen)
        self.net: nn.Module | None = None

    def learns_by_sgd(self, exp: Experience) -> bool:
        return False

    def fit_experience(self, exp: Experience) -> None:
        order = exp.train_idx[torch.randperm(exp.num_train, generator=self.order_gen).to(exp.train_idx.device)]
        self.memory.add(exp.raw(order), exp.labels(order))
        self.net = self.train_on_memory()

    def train_on_memory(self) -> nn.Module:
        """A fresh model trained from scratch on the memory; depends only on the memory and the run's seed."""
        ctx, hp = self.ctx, self.hp
        net = fresh_copy(ctx.model, self.seed)
        n = len(self.memory)
        x = ctx.prepare(self.memory.store["raw"][:n])
        y = self.memory.store["y"][:n]
        gen = torch.Generator().manual_seed(self.seed)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=hp["lr"], momentum=0.9, weight_decay=1e-6)
        B = ctx.batch_size
        steps = math.ceil(n / B)
        total = (hp["epochs"] - 1) * steps

        def rate(step: int) -> float:
            """lr/10 for the first epoch (warm-up), then cosine from lr to lr/100."""
            if step < steps:
                return hp["lr"] / 10
            t = (step - steps) / max(total, 1)
            return hp["lr"] / 100 + (hp["lr"] - hp["lr"] / 100) * (1 + math.cos(math.pi * t)) / 2

        def loss_of(idx: Tensor) -> Tensor:
            return ctx.cross_entropy(net(x[idx]), y[idx])

        net.train()
        descend(opt, ((torch.randperm(n, generator=gen).to(y.device), loss_of) for _ in range(hp["epochs"])), B, rate,
                clip=hp["clip"])
        net.eval()
        return net

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return model(x) if self.net is None else self.net(x)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "order": self.order_gen.get_state(),
                "net": {} if self.net is None else dict(self.net.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.order_gen.set_state(state["order"])
        self.net = None
        if state["net"]:
            self.net = copy.deepcopy(self.ctx.model)
            self.net.load_state_dict(state["net"])
            self.net.eval()
