"""HAT (Serra et al., ICML 2018): hard attention masks on each layer's units, learned per task."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.analytic.features import last_linear
from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import Batch, Gradients, Outputs, Strategy, register

MASKED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
THRES_COSH = 50.0  # the authors' clamp of s * e inside cosh
THRES_EMB = 6.0  # the authors' clamp of the embeddings after each step
EMBEDDINGS = "hat_embedding"  # the model's parameters hat_embedding_0, _1, ... (one per masked layer)


def unit_view(mask: Tensor, dims: int, axis: int) -> Tensor:
    """`mask` (units) shaped to broadcast along `axis` of a `dims`-dimensional tensor."""
    shape = [1] * dims
    shape[axis] = -1
    return mask.view(shape)


def compensation(e: Tensor, s: float, smax: float) -> Tensor:
    """The factor HAT multiplies the embeddings' gradients by: smax/s (cosh(clamp(s e)) + 1) / (cosh(e) + 1)."""
    return smax / s * (torch.cosh(torch.clamp(s * e, -THRES_COSH, THRES_COSH)) + 1) / (torch.cosh(e) + 1)


@register
class HAT(Strategy):
    """HAT: a task embedding e^t_l per masked layer l gives the gate a^t_l = sigmoid(s e^t_l) on its units.

    Algorithm (experience of task t; masked layers = every Linear/Conv layer but the last Linear, the
    classifier; the gate multiplies the layer's outputs, which for ReLU nets is the paper's post-activation gate):
        s = 1/smax + (smax - 1/smax) b/N          (b: index of the batch's first sample in the epoch, N samples)
        loss = CE + c * sum_l sum_i a_li (1 - a^<t_li) / sum_l sum_i (1 - a^<t_li)     (task 0: sum a / count)
        before_step: the gradient of weight (i <- j) of layer l is scaled by 1 - min(a^<t_l,i, a^<t_(l-1),j)
            (bias: 1 - a^<t_l,i): units used by earlier tasks keep their weights;
            the embeddings' gradients are scaled by smax/s (cosh(clamp(s e, +-50)) + 1) / (cosh(e) + 1)
        after_step: embeddings clamped to +-6
        end_experience: a^<=t = max(a^<t, sigmoid(smax e^t))   (binary at smax)
    The embeddings are parameters of the model (`hat_embedding_<l>`, added by `adapt_model`, N(0, 1) like
    torch's Embedding), trained by the engine's optimizer. Weights whose factor is exactly 0, the other tasks'
    embeddings and, on task-incremental streams, the classifier rows of finished tasks' classes (the paper's
    separate heads) are also written back after the step, so momentum and weight decay cannot move them (the
    authors use plain SGD, where a zero gradient is enough).
    Prediction: task-incremental streams score each task's classes with that task's gates at s = smax (one
    forward per task). Class-incremental streams have no task id at test time: tasks are the experiences and
    prediction uses the union of the gates of the tasks learned so far, a^<=t; this is not HAT's setting
    (it needs task ids) and forgets like fine-tuning of the shared head; use task-split scenarios.
    Deviations: no validation-based early stopping, learning-rate decay or model restore (the engine's
    schedule runs instead); the authors' gradient-norm clipping at 10000 is left out (it never acts at
    this scale); models with BatchNorm are refused (their statistics are shared by all tasks).
    """

    name = "hat"
    family = "isolation"
    composable = False
    alone_because = "its per-task unit masks gate the whole network and its gradients"
    description = "hard attention to the task: per-task binary unit masks, gradients of used units blocked"
    params = {
        "smax": Param(400.0, "s_max: final gate slope (gates are binary at s_max)", low=1.0),
        "lamb": Param(0.75, "c: strength of the regulariser that keeps the new task's gates sparse", low=0.0),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.gate: list[Tensor] | None = None  # the gates the forward hooks apply now (None: none)
        self.s = 1.0
        self.step = 0  # steps into the current experience
        self.task = 0
        self.current = -1
        self.used: list[Tensor] | None = None  # a^<t: union of the finished tasks' gates
        self.stash: list[tuple[nn.Parameter, Tensor, Tensor | None]] | None = None

    # --- structure ------------------------------------------------------------------------------------
    def layers(self, model: nn.Module | None = None) -> list[nn.Module]:
        model = self.ctx.model if model is None else model
        head = last_linear(model)
        return [m for m in model.modules() if isinstance(m, MASKED) and m is not head]

    @staticmethod
    def units(layer: nn.Module) -> int:
        return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels

    def task_key(self, exp: Experience) -> int:
        return exp.task_id if self.ctx.stream.task_aware else exp.index

    def setup(self, ctx) -> None:
        super().setup(ctx)
        model = ctx.model
        if any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules()):
            raise LifelongError("hat cannot mask models with BatchNorm (all tasks share its statistics): "
                                "use --model mlp or cnn")
        layers = self.layers(model)
        if not layers:
            raise LifelongError("hat needs at least one Linear or Conv layer before the classifier")
        prev = None
        for layer in layers:
            fan_in = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
            if prev is not None and fan_in % prev:
                raise LifelongError(f"hat: a {type(layer).__name__} with {fan_in} inputs follows a layer of "
                                    f"{prev} units; hat needs each masked layer to read the previous one's units")
            prev = self.units(layer)

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        if hasattr(model, f"{EMBEDDINGS}_0"):
            return model
        tasks = max(self.task_key(e) for e in self.ctx.stream) + 1
        g = torch.Generator().manual_seed(self.ctx.generator.initial_seed() + 1)
        layers = self.layers(model)
        device = next(model.parameters()).device
        for i, layer in enumerate(layers):
            model.register_parameter(f"{EMBEDDINGS}_{i}",
                                     nn.Parameter(torch.randn(tasks, self.units(layer), generator=g).to(device)))

            layer.register_forward_hook(self.hook(i))
        return model

    def hook(self, i: int):
        def apply(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            if self.gate is None:
                return None
            return output * unit_view(self.gate[i], output.dim(), 1)
        return apply

    def embeddings(self) -> list[nn.Parameter]:
        model = self.ctx.model
        return [getattr(model, f"{EMBEDDINGS}_{i}") for i in range(len(self.layers(model)))]

    def gates(self, task: int, s: float) -> list[Tensor]:
        return [torch.sigmoid(s * e[task]) for e in self.embeddings()]

    # --- training -------------------------------------------------------------------------------------
    def begin_experience(self, exp: Experience) -> None:
        self.current, self.task, self.step = exp.index, self.task_key(exp), 0

    def training_batch(self, batch: Batch) -> Batch:
        exp = self.ctx.stream[self.current]
        n, bs = exp.num_train, self.ctx.batch_size
        first = (self.step % math.ceil(n / bs)) * bs
        smax = self.hp["smax"]
        self.s = 1 / smax + (smax - 1 / smax) * first / n
        self.step += 1
        self.gate = self.gates(self.task, self.s)
        return batch

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        if self.hp["lamb"] == 0 or self.gate is None:
            return None
        if self.used is None:
            reg = sum(a.sum() for a in self.gate) / sum(a.numel() for a in self.gate)
        else:
            free = [1 - u for u in self.used]
            reg = sum((a * f).sum() for a, f in zip(self.gate, free, strict=True)) / sum(
                f.sum() for f in free).clamp_min(1e-12)
        return self.hp["lamb"] * reg

    def weight_factors(self) -> list[tuple[nn.Parameter, Tensor]]:
        """(parameter, 1 - min(a^<t of its unit, a^<t of its input unit)) for every masked layer's weight and
        bias: the paper's gradient restriction (empty before the first task is finished)."""
        if self.used is None:
            return []
        out = []
        prev: Tensor | None = None
        for layer, used in zip(self.layers(), self.used, strict=True):
            w = layer.weight
            post = unit_view(used, w.dim(), 0)
            if prev is None:
                both = post.expand_as(w)
            else:
                fan_in = w.shape[1]
                pre = unit_view(prev.repeat_interleave(fan_in // prev.numel()), w.dim(), 1)
                both = torch.minimum(post, pre)
            out.append((w, 1 - both))
            if layer.bias is not None:
                out.append((layer.bias, 1 - used))
            prev = used
        return out

    @torch.no_grad()
    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        stash: list[tuple[nn.Parameter, Tensor, Tensor | None]] = []
        for p, factor in self.weight_factors():
            if p.grad is not None:
                p.grad.mul_(factor)
            stash.append((p, p.detach().clone(), factor == 0))
        smax = self.hp["smax"]
        for e in self.embeddings():
            if e.grad is not None:
                e.grad.mul_(compensation(e.detach(), self.s, smax))
            others = torch.ones(e.shape[0], 1, dtype=torch.bool, device=e.device)
            others[self.task] = False
            stash.append((e, e.detach().clone(), others.expand_as(e)))
        stream = self.ctx.stream
        if stream.task_aware:
            head = last_linear(self.ctx.model)
            old = torch.zeros(head.out_features, dtype=torch.bool, device=head.weight.device)
            for e in stream:
                if e.task_id != self.task:
                    old[e.classes] = True
            stash.append((head.weight, head.weight.detach().clone(), old.unsqueeze(1).expand_as(head.weight)))
            if head.bias is not None:
                stash.append((head.bias, head.bias.detach().clone(), old))
        self.stash = stash

    @torch.no_grad()
    def after_step(self, batch: Batch, out: Outputs) -> None:
        for p, old, keep in self.stash or []:
            p.copy_(torch.where(keep, old, p))
        self.stash = None
        for e in self.embeddings():
            e.clamp_(-THRES_EMB, THRES_EMB)

    @torch.no_grad()
    def end_experience(self, exp: Experience) -> None:
        final = self.gates(self.task_key(exp), self.hp["smax"])
        self.used = final if self.used is None else [torch.maximum(u, a) for u, a in zip(self.used, final,
                                                                                          strict=True)]
        self.gate = None

    # --- evaluation -----------------------------------------------------------------------------------
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        if not hasattr(model, f"{EMBEDDINGS}_0"):  # evaluated before the first experience
            return model(x)
        stream, smax = self.ctx.stream, self.hp["smax"]
        saved = self.gate
        try:
            if not stream.task_aware:
                self.gate = self.used if self.used is not None else self.gates(self.task, smax)
                return model(x)
            scores: Tensor | None = None
            for task in sorted({e.task_id for e in stream}):
                self.gate = self.gates(task, smax)
                out = model(x)
                cols = torch.tensor(sorted({c for e in stream if e.task_id == task for c in e.classes}),
                                    device=out.device)
                if scores is None:
                    scores = out.clone()
                scores[:, cols] = out[:, cols]
            return scores  # type: ignore[return-value]
        finally:
            self.gate = saved

    # --- resume ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"used": None if self.used is None else list(self.used), "step": self.step, "task": self.task,
                "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used = None if state["used"] is None else list(state["used"])
        self.step, self.task, self.current = int(state["step"]), int(state["task"]), int(state["current"])
