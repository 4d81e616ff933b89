"""FPF, forgetting prioritized finetuning (Zhao, Zhou, Long, Jiang, Zhang, ICML 2023, "Does Continual Learning
Equally Forget All Parameters?"; specification: methods.md section 7). k-FPF is in kfpf.py and shares the
fine-tuning round and the module selection defined here.

    train with any CL method (here ER, or plain SGD with replay=false, or composed: derpp+fpf)
    at the end of the stream (at=end) or of every experience (at=experience):
        freeze every parameter outside the selected modules
        repeat fpf_iters times:
            (x, y[, z]) = replay_batch_size samples drawn uniformly from the buffer
            loss = CE(f(x), y) (+ kd_weight * MSE(f(x), z): FPF-KD, z = logits stored with the sample as in DER)
            SGD step (rate fpf_lr, no momentum) on the selected parameters only

Selected modules (`modules`):
- paper: the paper's forgetting-prone set for ResNets: the classification head (the model's last nn.Linear),
  every BatchNorm layer (affine parameters and running statistics) and the first convolution (the stem). On a
  model without BatchNorm or convolutions (the default MLP) this is the head alone.
- head: the head alone.
- score: the `top_modules` modules with the highest sensitivity score, the paper's training-dynamics measure:
  for each module m with n_m parameters, s_m = sum over experiences of ||theta_m(end) - theta_m(start)||^2 / n_m
  (how much the module moves per experience, normalised by its size), accumulated up to the fine-tuning.

During a round the model is in eval mode except the selected BatchNorm layers (train mode: their running
statistics adapt to the buffer, the others stay as they are); gradients are taken with torch.autograd.grad for
the selected parameters only, so every other parameter and buffer is bit-identical across the round.

Implementation notes and deviations:
- the fine-tuning loop runs inside the `end_experience` hook (the engine has no "extra optimisation" hook); its
  mini-batches are drawn with `ctx.generator` and its optimizer is plain SGD, which keeps no state, so resume is
  exact;
- the paper fine-tunes for a number of epochs/iterations with its own rate; both are hyperparameters here
  (`fpf_iters`, `fpf_lr`; defaults from the sweep in docs/zoo/fpf.md). The module set was given from the paper's
  findings in methods.md ("confirm"); the authors' code was not found among the stored repositories;
- at=experience (the default, chosen by the sweep) fine-tunes at every experience end, so the accuracy matrix
  shows FPF after every experience and training continues from the fine-tuned weights; at=end follows the
  paper's "at the end of any CL method" literally (earlier rows of the matrix are then the base method's).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from lifelong.analytic.features import last_linear
from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.replay import BUFFER_PARAMS, ER

MODULE_CHOICES = ("paper", "head", "score")
FPF_PARAMS = {
    "fpf_iters": Param(300, "fine-tuning steps of one FPF round (mini-batches of replay_batch_size)", low=0),
    "fpf_lr": Param(0.01, "learning rate of the fine-tuning (plain SGD)", low=0.0, low_open=True),
    "modules": Param("paper", "modules fine-tuned: paper (head, BatchNorm, stem conv), head, or score (the "
                     "top_modules most sensitive)", choices=MODULE_CHOICES),
    "top_modules": Param(2, "modules fine-tuned with modules=score", low=1),
    "kd_weight": Param(0.0, "weight of the logit-matching term (FPF-KD; 0: FPF-CE)", low=0.0),
}


def parameterised_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters directly, by name (the units FPF selects)."""
    return {n: m for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}


def paper_modules(model: nn.Module) -> list[nn.Module]:
    """The paper's forgetting-prone modules: the head (last Linear), every BatchNorm and the first convolution."""
    chosen: list[nn.Module] = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    stem = next((m for m in model.modules() if isinstance(m, _ConvNd)), None)
    if stem is not None:
        chosen.insert(0, stem)
    chosen.append(last_linear(model))
    return chosen


class FineTuning:
    """The FPF round and its bookkeeping, for strategies with a `memory` and `hp` holding FPF_PARAMS."""

    ctx: Any
    hp: dict[str, Any]
    memory: Any

    def init_fpf(self) -> None:
        self.fpf_steps = 0  # fine-tuning steps made so far (all rounds)
        self.scores: dict[str, float] = {}
        self.start: dict[str, Tensor] = {}

    # --- sensitivity -------------------------------------------------------------------------------------
    def flat_parameters(self) -> dict[str, Tensor]:
        return {name: torch.cat([p.detach().reshape(-1) for p in m.parameters(recurse=False)])
                for name, m in parameterised_modules(self.ctx.model).items()}

    def mark_start(self) -> None:
        """Remember where the parameters start an experience (for the sensitivity score)."""
        if self.hp["modules"] == "score":
            self.start = {k: v.clone() for k, v in self.flat_parameters().items()}

    def sensitivity(self, include_current: bool = True) -> dict[str, float]:
        """s_m: accumulated per-experience squared change of each module's parameters over its size."""
        scores = dict(self.scores)
        if include_current and self.start:
            for name, now in self.flat_parameters().items():
                before = self.start.get(name)
                if before is not None and before.shape == now.shape:
                    scores[name] = scores.get(name, 0.0) + float((now - before).pow(2).sum()) / now.numel()
        return scores

    def close_experience(self) -> None:
        if self.hp["modules"] == "score":
            self.scores = self.sensitivity()
            self.start = {}

    def selected_modules(self) -> list[nn.Module]:
        model = self.ctx.model
        if self.hp["modules"] == "head":
            return [last_linear(model)]
        if self.hp["modules"] == "paper":
            return paper_modules(model)
        named = parameterised_modules(model)
        scores = self.sensitivity()
        ranked = sorted(named, key=lambda n: (-scores.get(n, 0.0), n))
        return [named[n] for n in ranked[:self.hp["top_modules"]]]

    # --- the round ---------------------------------------------------------------------------------------
    def finetune(self, iters: int) -> None:
        """`iters` SGD steps on the selected modules' parameters, on mini-batches drawn from the buffer."""
        n = len(self.memory)
        if iters <= 0 or n == 0:
            return
        model, ctx = self.ctx.model, self.ctx
        modules = self.selected_modules()
        params = [p for m in modules for p in m.parameters(recurse=False)]
        if not params:
            raise LifelongError("FPF: the selected modules have no parameters to fine-tune")
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        for m in modules:
            if isinstance(m, _BatchNorm):
                m.train()
        k, lr, kd = min(self.hp["replay_batch_size"], n), self.hp["fpf_lr"], self.hp["kd_weight"]
        try:
            with torch.enable_grad():
                for _ in range(iters):
                    slots = torch.randperm(n, generator=ctx.generator)[:k].tolist()
                    d = self.memory.take(slots)
                    logits = model(ctx.prepare(d["raw"]))
                    loss = ctx.cross_entropy(logits, d["y"])
                    if kd > 0:
                        loss = loss + kd * F.mse_loss(logits, d["logits"])
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        torch._foreach_add_(params, list(grads), alpha=-lr)
                    self.fpf_steps += 1
        finally:
            for m, training in modes:
                m.training = training

    def store(self, batch: Batch, out: Outputs) -> None:
        if self.hp["kd_weight"] > 0:
            self.memory.add(raw=batch.new.raw, y=batch.new.y, logits=out["new"].detach())
        else:
            self.memory.add(raw=batch.new.raw, y=batch.new.y)

    def fpf_state(self) -> dict[str, Any]:
        return {"fpf_steps": self.fpf_steps, "scores": dict(self.scores), "start": dict(self.start)}

    def load_fpf_state(self, state: dict[str, Any]) -> None:
        self.fpf_steps = int(state["fpf_steps"])
        self.scores = {k: float(v) for k, v in state["scores"].items()}
        self.start = dict(state["start"])


@register
class FPF(FineTuning, ER):
    name = "fpf"
    task_free = False  # its begin/end_experience need the boundaries (ER, its base, does not)
    description = "forgetting prioritized finetuning: ER, then tune only the forgetting-prone modules on the buffer"
    params = {
        **BUFFER_PARAMS,
        **FPF_PARAMS,
        "replay": Param(True, "replay a buffer batch at every step (ER); false: plain SGD steps, buffer only "
                        "for the fine-tuning (FPF on top of another method: derpp+fpf)"),
        "at": Param("experience", "when to fine-tune: at every experience end, or only at the end of the stream",
                    choices=("experience", "end")),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.init_fpf()

    def begin_experience(self, exp: Experience) -> None:
        self.mark_start()

    def training_batch(self, batch: Batch) -> Batch:
        return super().training_batch(batch) if self.hp["replay"] else batch

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.store(batch, out)

    def end_experience(self, exp: Experience) -> None:
        if self.hp["at"] == "experience" or exp.index == len(self.ctx.stream) - 1:
            self.finetune(self.hp["fpf_iters"])
        self.close_experience()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.fpf_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.load_fpf_state(state)


def steps_per_pass(ctx: Any) -> int:
    """Optimizer steps of one pass (one epoch) over every experience of the stream."""
    return sum(math.ceil(e.num_train / ctx.batch_size) for e in ctx.stream)

