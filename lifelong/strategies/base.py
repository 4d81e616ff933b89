"""The strategy interface: a few hooks on the one training loop, nothing else.

The engine owns the step (forward, loss, backward, optimizer). A strategy changes what goes into the batch
(`training_batch`), adds terms to the loss (`penalty`), looks at the result (`after_step`) and prepares for
or wraps up an experience. A method then reads like its paper's algorithm box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError
from lifelong.params import Param, resolve
from lifelong.registry import Registry


@dataclass
class Batch:
    """One training batch. The engine's cross-entropy covers the first len(y) rows of the logits;
    rows of `x` beyond that are extra inputs a strategy scores itself in `penalty` (e.g. DER++'s logits)."""

    x: Tensor
    y: Tensor
    raw: Tensor
    task: Tensor | None  # task id per labelled row (task-aware streams), else None
    experience: int
    n_new: int


@dataclass
class Context:
    """What the engine lends a strategy: the model, the stream, the device and a private RNG."""

    model: nn.Module
    stream: Stream
    device: torch.device
    generator: torch.Generator
    prepare: Callable[[Tensor], Tensor]
    cross_entropy: Callable[[Tensor, Tensor], Tensor]
    task_of: Callable[[Tensor], Tensor | None]
    batch_size: int

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Strategy:
    """Naive fine-tuning, and the base of every method: each hook does nothing by default."""

    name: ClassVar[str] = "naive"
    description: ClassVar[str] = "fine-tune on each experience in turn (lower bound: forgets)"
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, **hparams: Any) -> None:
        self.hp = resolve(self.params, hparams, self.name)
        self.ctx: Context | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.hp.items())})"

    def setup(self, ctx: Context) -> None:
        """Called once before training, with the engine's context."""
        self.ctx = ctx

    def adapt_stream(self, stream: Stream) -> Stream:
        """The stream this strategy trains on (references such as joint training rebuild it)."""
        return stream

    def begin_experience(self, exp: Experience) -> None:
        pass

    def training_batch(self, batch: Batch) -> Batch:
        return batch

    def penalty(self, batch: Batch, logits: Tensor) -> Tensor | None:
        """Extra loss terms for this step, or None."""
        return None

    def after_step(self, batch: Batch, logits: Tensor) -> None:
        pass

    def end_experience(self, exp: Experience) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-stream (buffers, anchors, teachers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Compose(Strategy):
    """Several strategies on one loop (e.g. `er+lwf`): hooks run in order, penalties add up."""

    name = "compose"
    description = "several strategies combined with '+'"

    def __init__(self, parts: list[Strategy]) -> None:
        self.parts = parts
        self.hp = {k: v for p in parts for k, v in p.hp.items()}
        self.ctx = None

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.parts))

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        for p in self.parts:
            p.setup(ctx)

    def adapt_stream(self, stream: Stream) -> Stream:
        for p in self.parts:
            stream = p.adapt_stream(stream)
        return stream

    def begin_experience(self, exp: Experience) -> None:
        for p in self.parts:
            p.begin_experience(exp)

    def training_batch(self, batch: Batch) -> Batch:
        for p in self.parts:
            batch = p.training_batch(batch)
        return batch

    def penalty(self, batch: Batch, logits: Tensor) -> Tensor | None:
        terms = [t for p in self.parts if (t := p.penalty(batch, logits)) is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def after_step(self, batch: Batch, logits: Tensor) -> None:
        for p in self.parts:
            p.after_step(batch, logits)

    def end_experience(self, exp: Experience) -> None:
        for p in self.parts:
            p.end_experience(exp)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): p.state_dict() for i, p in enumerate(self.parts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, p in enumerate(self.parts):
            p.load_state_dict(state[str(i)])


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register(cls: type[Strategy]) -> type[Strategy]:
    return STRATEGIES.register(cls.name)(cls)


def make_strategy(spec: str, hparams: dict[str, Any] | None = None) -> Strategy:
    """Build `naive`, `ewc` or a composition `er+lwf`; each part takes the hyperparameters it declares."""
    hparams = dict(hparams or {})
    classes = [STRATEGIES.get(name.strip()) for name in spec.split("+")]
    declared = {k for c in classes for k in c.params}
    for key in hparams:
        if key not in declared:
            from lifelong.errors import unknown_name

            raise unknown_name(f"hyperparameter of {spec}", key, declared or {"(none)"})
    parts = [c(**{k: v for k, v in hparams.items() if k in c.params}) for c in classes]
    if len(parts) == 1:
        return parts[0]
    if sum(getattr(p, "replaces_stream", False) for p in parts) and len(parts) > 1:
        raise LifelongError(f"'{spec}': joint and cumulative are references and cannot be combined")
    return Compose(parts)


register(Strategy)
