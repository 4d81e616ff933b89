"""Experience replay (ER; Chaudhry et al. 2019): each step trains on the new batch plus a batch drawn
from a memory of past samples; the memory is updated with the new samples after the step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, Strategy, register
from lifelong.strategies.buffers import make_buffer

BUFFER_PARAMS = {
    "buffer_size": Param(500, "samples kept in the replay memory", low=1),
    "replay_batch_size": Param(32, "replayed samples added to each step", low=1),
    "buffer": Param("reservoir", "memory policy", choices=("reservoir", "class-balanced")),
}


class ReplayBase(Strategy):
    """Owns a buffer of stored (compact) samples and draws from it."""

    family = "replay"
    params = BUFFER_PARAMS

    def setup(self, ctx) -> None:
        super().setup(ctx)
        seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
        self.memory = make_buffer(self.hp["buffer"], self.hp["buffer_size"], seed)

    def replay(self) -> dict[str, Tensor] | None:
        if len(self.memory) == 0:
            return None
        return self.memory.sample(self.hp["replay_batch_size"])

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])


@register
class ER(ReplayBase):
    name = "er"
    task_free = True
    description = "experience replay: each step adds a batch from a reservoir memory (compact storage)"

    def training_batch(self, batch: Batch) -> Batch:
        old = self.replay()
        if old is not None:
            batch.add(self.name, self.ctx.segment(old["raw"], old["y"], scored=True))
        return batch

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)
