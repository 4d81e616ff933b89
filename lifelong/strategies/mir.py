"""MIR (Aljundi et al. 2019, "Online Continual Learning with Maximally Interfered Retrieval").

    for each step on the new batch (x, y):
        C <- `candidates` samples drawn uniformly from the memory
        theta_v = theta - lr * grad_theta CE(f_theta(x), y)          (virtual SGD step on the new batch only)
        s_c = CE(f_theta_v(x_c), y_c) - CE(f_theta(x_c), y_c)        for every c in C (loss increase)
        R <- the replay_batch_size candidates with the largest s_c
        train on (x, y) together with R (ER's loss); offer (x, y) to the reservoir

As the authors' code (optimass/Maximally_Interfered_Retrieval, `retrieve_replay_update`): candidates drawn
without replacement, the scores computed without gradient and with the model as it is (mode unchanged), the
top-k by the loss increase; the final update uses the new and the retrieved samples together. The virtual step
and the two scoring passes are single batched functional calls (torch.func): the model's weights, gradients
and running statistics are untouched.

Cost over ER: one extra forward/backward on the new batch (the virtual gradient; the authors' code reuses the
gradient of the real step's new-batch loss) and two forwards on the candidates.

Deviation: the virtual step uses its own rate `lr` (the contract does not lend strategies the optimizer's
rate; the authors use the optimizer's). Keep it equal to the run's `--lr` for their setting. Candidates come from
the whole memory (the authors exclude the current task's and do not replay during the first), and new and
replayed rows share one mean cross-entropy (the authors sum the two means); measured within seed noise on
split-fashion-mnist (audit 2026-12-02).
"""

from __future__ import annotations

import torch

from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase
from lifelong.strategies.retrieval import per_sample_losses, virtual_step


@register
class MIR(ReplayBase):
    name = "mir"
    task_free = True
    description = "maximally interfered retrieval: replay the memory samples a virtual step would hurt most"
    params = {
        **BUFFER_PARAMS,
        "candidates": Param(50, "memory samples scored each step (the retrieved ones are the top replay_batch_size)",
                            low=1),
        "lr": Param(0.01, "rate of the virtual SGD step (use the run's --lr)", low=0.0, low_open=True),
    }

    def retrieve(self, batch: Batch) -> dict[str, torch.Tensor] | None:
        """The replay_batch_size candidates whose loss the virtual step on the new batch raises most (with their
        prepared inputs `x` when they were scored)."""
        if len(self.memory) == 0:
            return None
        cand = self.memory.sample(max(self.hp["candidates"], self.hp["replay_batch_size"]))
        k = min(self.hp["replay_batch_size"], len(cand["y"]))
        if k == len(cand["y"]):
            return cand
        ctx, new = self.ctx, batch.new
        theta, theta_v, rest = virtual_step(ctx.model, new.x, new.y, ctx.cross_entropy, self.hp["lr"])
        x = ctx.prepare(cand["raw"])
        with torch.no_grad():
            before = per_sample_losses(ctx.model, theta, rest, x, cand["y"], ctx.cross_entropy)
            after = per_sample_losses(ctx.model, theta_v, rest, x, cand["y"], ctx.cross_entropy)
        top = torch.topk(after - before, k).indices
        return {"x": x.index_select(0, top), **{name: v.index_select(0, top) for name, v in cand.items()}}

    def training_batch(self, batch: Batch) -> Batch:
        old = self.retrieve(batch)
        if old is not None:
            seg = self.ctx.segment(old["raw"], old["y"], scored=True)
            if "x" in old:  # the candidates were prepared for scoring: their rows, not a second conversion
                seg.x = old["x"]
            batch.add(self.name, seg)
        return batch

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)
