"""PackNet (Mallya & Lazebnik, CVPR 2018): prune after each task, freeze the kept weights, reuse the freed ones."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.analytic.features import last_linear
from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, Strategy, register

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prune_free(weight: Tensor, owner: Tensor, fraction: float, task: int) -> int:
    """Prune `fraction` of the free weights (owner 0) of one layer in place: the round(fraction * free) of least
    magnitude are set to 0 and stay free; the other free weights become owned by `task` (owner = task, > 0).
    Ties in magnitude are broken by position. Returns the number pruned."""
    free = (owner == 0).flatten().nonzero().flatten()
    k = round(fraction * free.numel())
    order = weight.detach().flatten()[free].abs().argsort(stable=True)
    pruned, kept = free[order[:k]], free[order[k:]]
    mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[pruned] = True
    with torch.no_grad():
        weight.masked_fill_(mask.view(weight.shape), 0.0)  # in place for any layout (a stack stores it transposed)
    owner.view(-1)[kept] = task
    return k


@register
class PackNet(Strategy):
    """PackNet: iterative pruning; each task owns a disjoint set of weights that later tasks never change.

    Algorithm (experience k; "layers" = every Linear/Conv layer but the last Linear, the classifier):
        train on k by the engine's SGD steps; only free weights (owned by no earlier task) learn:
            before_step: gradients of frozen weights are zeroed (and the frozen values kept);
            after_step:  the frozen values are written back, so momentum and weight decay cannot move them
                         (zeroed gradients alone still move weights through the momentum buffer)
        end_experience: in each layer, the `prune` fraction of the free weights of least magnitude is set to 0
            and stays free for later tasks; the other free weights become owned by k and are frozen from now on.
    Other parameters (biases, normalisation) are trained on the first experience only and frozen after it, as
    the authors' default (train_bias / train_bn off); so are BatchNorm's running statistics: after the first
    experience every BatchNorm layer stays in eval mode while training (the authors' `train_nobn`), else old
    tasks would be evaluated with the newest task's statistics and task-incremental forgetting would not be 0.
    The last experience is not pruned (nothing comes after it to use the freed weights; the authors' scripts
    prune every task but the last): its free weights are all owned by it.
    Classifier: the authors keep one head per task; here the head is the model's one Linear over all classes:
    on task-incremental streams its rows (and biases) of the classes of finished experiences are frozen like
    owned weights (a separate head per task); on class-incremental streams it stays trainable.
    Prediction: task-incremental streams use, for the classes of task t, the network of t: the weights owned by
    t's experiences and earlier ones (later and free weights read as 0), one forward per finished task;
    the task being trained uses every weight. Class-incremental streams have no task id at test time: they use
    the union of every task's weights (the model as it is), which is the network of the latest task; older
    tasks are then scored with weights they were not trained with (a limitation of PackNet, stated here).
    Deviation: the paper retrains the kept weights for a few epochs after pruning; the engine's plan has no
    extra steps and the strategy does not know how many steps an experience has, so pruning happens once at
    the end of the experience without retraining (the pruned weights are the smallest, so the loss of
    accuracy is small; see docs/zoo/packnet.md). The authors build a new optimizer for every task; here the
    engine's optimizer is kept, so a pruned weight starts the next task with its momentum buffer.
    Reference: arunmallya/packnet, src/main.py (train_nobn, the prune/finetune loop) and src/prune.py.
    """

    name = "packnet"
    family = "isolation"
    description = "prune each layer after every experience, freeze the kept weights, train later tasks on the rest"
    params = {"prune": Param(0.5, "fraction of each layer's free weights pruned (freed for later tasks) after "
                                  "each experience; the rest is frozen for the experience's task", low=0.0, high=1.0)}

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.owner: dict[str, Tensor] = {}  # layer weight name -> 0 free, k+1 owned by experience k
        self.finished: list[int] = []  # experiences pruned and frozen, in order
        self.current = -1
        self.stash: list[tuple[nn.Parameter, Tensor, Tensor | None]] | None = None
        self.masks_for: tuple | None = None
        self.masks: list[tuple[nn.Parameter, Tensor | None]] = []
        self.norms: list[nn.Module] | None = None  # the model's BatchNorm layers

    # --- structure ------------------------------------------------------------------------------------
    def layers(self) -> dict[str, nn.Parameter]:
        """Prunable weights by parameter name: every trainable Linear/Conv weight but the classifier's (a layer
        the user froze is not trained, so it is neither pruned nor owned by an experience)."""
        model = self.ctx.model
        head = last_linear(model)
        return {f"{n}.weight" if n else "weight": m.weight for n, m in model.named_modules()
                if isinstance(m, PRUNABLE) and m is not head and m.weight.requires_grad}

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.owner = {n: torch.zeros(w.shape, dtype=torch.int16, device=w.device) for n, w in self.layers().items()}

    def frozen_masks(self) -> list[tuple[nn.Parameter, Tensor | None]]:
        """(parameter, mask of its frozen entries; None: all frozen) for every parameter with frozen entries."""
        key = (tuple(self.finished), id(self.ctx.model))
        if self.masks_for == key:
            return self.masks
        self.masks_for, self.masks = key, self.compute_frozen_masks()
        return self.masks

    def compute_frozen_masks(self) -> list[tuple[nn.Parameter, Tensor | None]]:
        if not self.finished:
            return []
        model, stream = self.ctx.model, self.ctx.stream
        layers = self.layers()
        head = last_linear(model)
        head_ids = {id(p) for p in head.parameters()}
        out: list[tuple[nn.Parameter, Tensor | None]] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name in layers:
                out.append((p, self.owner[name] != 0))
            elif id(p) not in head_ids:
                out.append((p, None))
        if stream.task_aware:
            old = torch.zeros(head.out_features, dtype=torch.bool, device=head.weight.device)
            for k in self.finished:
                old[stream[k].classes] = True
            out.append((head.weight, old.unsqueeze(1).expand_as(head.weight)))
            if head.bias is not None:
                out.append((head.bias, old))
        return out

    # --- training -------------------------------------------------------------------------------------
    def begin_experience(self, exp: Experience) -> None:
        self.current = exp.index

    def training_batch(self, batch: Batch) -> Batch:
        if self.finished:  # the engine puts the model in train mode: keep the statistics of the first experience
            if self.norms is None:  # found once (PackNet never grows the model)
                self.norms = [m for m in self.ctx.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            for m in self.norms:
                m.eval()
        return batch

    @torch.no_grad()
    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        stash = []
        for p, mask in self.frozen_masks():
            if p.grad is not None:
                if mask is None:
                    p.grad.zero_()
                else:
                    p.grad.masked_fill_(mask, 0.0)
            stash.append((p, p.detach().clone(), mask))
        self.stash = stash

    @torch.no_grad()
    def after_step(self, batch: Batch, out: Outputs) -> None:
        for p, old, mask in self.stash or []:
            if mask is None:
                p.copy_(old)
            else:
                p.copy_(torch.where(mask, old, p))
        self.stash = None

    @torch.no_grad()
    def end_experience(self, exp: Experience) -> None:
        if exp.index in self.finished:
            return
        last = exp.index == len(self.ctx.stream) - 1
        for name, w in self.layers().items():
            prune_free(w, self.owner[name], 0.0 if last else self.hp["prune"], exp.index + 1)
        self.finished.append(exp.index)

    # --- evaluation -----------------------------------------------------------------------------------
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        scores = model(x)
        stream = self.ctx.stream
        if not stream.task_aware or not self.finished:
            return scores
        current_task = stream[self.current].task_id if self.current >= 0 else None
        last: dict[int, int] = {}
        for k in self.finished:
            last[stream[k].task_id] = k
        layers = self.layers()
        for task, k in last.items():
            if task == current_task:
                continue
            masked = {n: w * ((self.owner[n] > 0) & (self.owner[n] <= k + 1)) for n, w in layers.items()}
            cols = torch.tensor(sorted({c for e in stream if e.task_id == task for c in e.classes}),
                                device=scores.device)
            scores[:, cols] = functional_call(model, masked, (x,))[:, cols]
        return scores

    # --- resume ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"owner": dict(self.owner), "finished": list(self.finished), "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.owner = {n: t.to(torch.int16) for n, t in state["owner"].items()}
        self.finished = [int(k) for k in state["finished"]]
        self.current = int(state["current"])
