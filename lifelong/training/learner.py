"""The learner: model, optimizer and learning-rate schedule, and one training step through the strategy's hooks.

    batch = strategy.training_batch(Batch(new))        out = batch.split(model(batch.x))
    loss  = strategy.loss(batch, out) or CE(scored segments)  (+ strategy.penalty(batch, out))
    backward; strategy.before_step(batch, out, grads); optimizer.step(); strategy.after_step(batch, out)
    strategy.observe(batch, out)      (once per incoming batch: not on an online batch's repeated steps)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.optim.optimizer as torch_optimizer
from torch import Tensor, nn

from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError
from lifelong.schedules.refined import gradient_norms
from lifelong.schedules.schedulefree_support import make_schedulefree
from lifelong.schedules.stream import StreamSchedule
from lifelong.strategies import Batch, Context, Strategy
from lifelong.strategies.base import Gradients, Segment
from lifelong.training import distributed
from lifelong.training.config import RunConfig
from lifelong.training.distributed import SINGLE, World
from lifelong.training.kernels import linear_kernel
from lifelong.training.optimizers import accepted_arguments, resolve_optimizer
from lifelong.training.stacked import Stack, check_member


def _plain(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` without the wrappers torch.optim puts around it for `torch.compile` (`torch._disable_dynamo`,
    `_use_grad_for_differentiable`): they import `torch._dynamo` on first use (about a fifth of a short run's
    process time) and call into it on every step. The engine never compiles its step, so they do nothing here."""
    return inspect.unwrap(method)


class _Eager:
    """Mixin for torch.optim classes: the same methods and the same arithmetic, called without dynamo's
    wrappers (see `_plain`); `step` runs with gradients off, as torch's wrapper does."""

    add_param_group = _plain(torch.optim.Optimizer.add_param_group)
    _zero_grad = _plain(torch.optim.Optimizer.zero_grad)
    state_dict = _plain(torch.optim.Optimizer.state_dict)
    load_state_dict = _plain(torch.optim.Optimizer.load_state_dict)
    _step: Callable[..., Any]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's (which also opens a profiler range, ~10 us a call): gradients set to None, or zeroed."""
        if not set_to_none:
            return self._zero_grad(False)
        for group in self.param_groups:  # type: ignore[attr-defined]
            for p in group["params"]:
                p.grad = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """torch's step. Its step hooks (global and this optimizer's) and its profiler range run as torch runs
        them when any is registered or a profiler is on; otherwise their wrapper (about 50 us a step, 2-3 % of
        a small model's step) is not entered."""
        if (torch.autograd.profiler._is_profiler_enabled or torch_optimizer._global_optimizer_pre_hooks
                or torch_optimizer._global_optimizer_post_hooks or self._optimizer_step_pre_hooks  # type: ignore[attr-defined]
                or self._optimizer_step_post_hooks):  # type: ignore[attr-defined]
            return torch.optim.Optimizer.profile_hook_step(_Eager._run)(self, closure)
        return self._run(closure)

    step.hooked = True  # type: ignore[attr-defined]  # torch.optim then leaves `step` unwrapped

    def _run(self, closure: Callable[[], Any] | None = None) -> Any:
        with torch.set_grad_enabled(self.defaults["differentiable"]):  # type: ignore[attr-defined]
            fused = [g for g in self.param_groups if g.get("fused")]  # type: ignore[attr-defined]
            if not fused:
                return self._step(closure)
            unfused = [(g, g["foreach"]) for g in fused if not self._ready_for_fused(g)]
            for group, _ in unfused:
                group["fused"], group["foreach"] = False, True
            try:
                return self._step(closure)
            finally:
                for group, foreach in unfused:
                    group["fused"], group["foreach"] = True, foreach

    def _ready_for_fused(self, group: dict[str, Any]) -> bool:
        """Lay out each gradient and state tensor of `group` like its parameter, and say whether torch's fused
        step can take the group now. torch's fused CPU kernels walk parameter, gradient and state as if they
        shared one memory layout and silently mix up elements where they do not (a transposed momentum buffer
        loaded from a checkpoint into a stacked run's transposed view, for one); the copies here are exact.
        An SGD group with momentum where some parameters have a buffer and some, just added by a growing model,
        do not yet is refused by the fused kernel: the new ones get a zero buffer, which with no dampening makes
        the fused update's first buffer momentum * 0 + grad = grad exactly, the single-tensor step's first
        buffer. False (that step is then torch's multi-tensor one, which follows the single-tensor step's
        rules) for a sparse gradient, which the fused kernels refuse, and for that mix under dampening."""
        new: list[Tensor] = []
        with_buffer = False
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                return False
            if p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
            state = self.state.get(p)  # type: ignore[attr-defined]
            if not state:
                new.append(p)
                continue
            with_buffer |= state.get("momentum_buffer") is not None
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)
        if new and with_buffer and group.get("momentum"):
            if group.get("dampening"):
                return False
            for p in new:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)  # type: ignore[attr-defined]
        return True


class SGD(_Eager, torch.optim.SGD):
    _step = _plain(torch.optim.SGD.step)


class Adam(_Eager, torch.optim.Adam):
    _step = _plain(torch.optim.Adam.step)


class AdamW(_Eager, torch.optim.AdamW):
    _step = _plain(torch.optim.AdamW.step)


def step_kernel(params: list[Any], extra: dict[str, Any]) -> dict[str, bool]:
    """torch's fused step where torch has one for every parameter's device and dtype (CPU and CUDA floats in
    current torch), its multi-tensor (`foreach`) step otherwise; `fused=` or `foreach=` in the user's
    `optimizer_params` decide instead."""
    if "fused" in extra or "foreach" in extra:
        return {} if extra.get("fused") or "foreach" in extra else {"foreach": True}
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    fused, _ = torch_optimizer._default_to_fused_or_foreach(tensors, differentiable=False, use_fused=True)
    return {"fused": True} if fused else {"foreach": True}


def make_optimizer(cfg: RunConfig, params, factory: Any = None) -> torch.optim.Optimizer:
    """The optimizer named by the config over `params`, or the user's: a torch.optim class (built with the
    config's lr, weight decay when set, momentum for SGD and its subclasses, and `optimizer_params`, as the
    same optimizer by name) or a factory called with the parameters.

    SGD, Adam and AdamW take torch's fused step where it exists for the parameters (CPU and CUDA floats in
    current torch), else its multi-tensor (`foreach`) step: one call per step for all parameters instead of a
    Python loop over them. The fused kernel reads and writes each parameter, gradient and state once: 7-12 %
    less time per run than the multi-tensor step for the default MLP on CPU (benchmarks/bench_speed.py, with
    and without --foreach). It rounds differently from torch's single-tensor default: one step agrees to a unit
    or two in the last place of the weights, a dozen steps to a few (tests/test_speed_equivalence.py); runs
    stay deterministic, but differ from runs made with the multi-tensor step in the last bits, which a long
    run grows as it grows any float reordering (final accuracies within about 0.5 %).
    `optimizer_params="foreach=True"` gives back the multi-tensor step, bit-identical to the single-tensor one.
    Three hazards of torch's fused kernels are handled (`_Eager._ready_for_fused`). The classes are torch's own
    minus the compile hooks (see `_plain`)."""
    try:
        return build_optimizer(cfg, params, factory)
    except (TypeError, ValueError) as err:
        given = f" with optimizer_params={cfg.optimizer_params!r}" if cfg.optimizer_params else ""
        raise LifelongError(f"optimizer {cfg.optimizer if factory is None else describe_factory(factory)} cannot "
                            f"be built{given}: {str(err).splitlines()[0][:200]}") from None


def describe_factory(factory: Any) -> str:
    return getattr(factory, "__qualname__", None) or type(factory).__name__


def build_optimizer(cfg: RunConfig, params, factory: Any = None) -> torch.optim.Optimizer:
    extra, params = cfg.optimizer_kwargs(), list(params)
    if isinstance(factory, torch.optim.Optimizer):
        raise LifelongError(f"give the optimizer as a class or a factory (lambda params: torch.optim."
                            f"{type(factory).__name__}(params, ...)), not as a built {type(factory).__name__}: the "
                            "engine builds it over the parameters it trains, again whenever a strategy grows the model")
    if isinstance(factory, type):  # a class gets the config's rate, weight decay (SGD: momentum), as by name
        accepted = accepted_arguments(factory)
        settings = {"weight_decay": cfg.weight_decay} if cfg.weight_decay and "weight_decay" in accepted else {}
        if issubclass(factory, torch.optim.SGD):
            settings["momentum"] = cfg.momentum
        factory = functools.partial(factory, lr=cfg.lr, **{**settings, **extra})
    if factory is not None:
        made = factory(params)
        if not isinstance(made, torch.optim.Optimizer):
            raise LifelongError(f"the optimizer factory returned {type(made).__name__}, not a torch.optim.Optimizer")
        return made
    other = resolve_optimizer(cfg.optimizer)
    if other is not None:
        accepted = accepted_arguments(other)
        defaults = {"weight_decay": cfg.weight_decay} if cfg.weight_decay and "weight_decay" in accepted else {}
        return other(params, lr=cfg.lr, **{**defaults, **extra})
    if cfg.schedulefree:
        name = cfg.optimizer.removesuffix("-schedulefree")
        momentum = {"momentum": cfg.momentum} if name == "sgd" else {}
        constant = cfg.build_schedule()  # '' or 'constant' (checked by the config): its peak and warmup
        return make_schedulefree(params, name, lr=constant.peak, warmup_steps=constant.warmup,
                                 weight_decay=cfg.weight_decay, **{**momentum, **extra})
    kernel = step_kernel(params, extra)
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, **{"momentum": cfg.momentum, "weight_decay": cfg.weight_decay, **kernel,
                                         **extra})
    cls = Adam if cfg.optimizer == "adam" else AdamW
    return cls(params, lr=cfg.lr, **{"weight_decay": cfg.weight_decay, **kernel, **extra})


@contextlib.contextmanager
def norms_in_eval_mode(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in eval mode for one forward: a batch of one row (an experience whose size leaves one
    sample for its last batch) has no batch statistics, so torch refuses it in train mode; that row is
    normalised with the running statistics instead, which it does not update."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


class Learner:
    """Trains `model` on a stream's experiences with `strategy`; owns the optimizer and the rate of every step."""

    def __init__(self, cfg: RunConfig, stream: Stream, train_stream: Stream, strategy: Strategy, model: nn.Module,
                 device: torch.device, generator: torch.Generator,
                 save_artifact: Callable[[str, Any], Path | None] | None = None, optimizer: Any = None,
                 world: World = SINGLE) -> None:
        self.cfg, self.stream, self.train_stream, self.strategy = cfg, stream, train_stream, strategy
        self.device, self.world = device, world
        distributed.check_model(model, strategy.name, strategy.separate_gradients, world)
        distributed.broadcast_module(model, world)
        self.data = stream[0].data
        self.model = model
        self.kernels: dict[int, Callable[[], contextlib.AbstractContextManager]] = {}  # forward contexts by rows
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer_factory = optimizer
        self.optimizer = make_optimizer(cfg, self.params, optimizer)
        self.rate_scales = self.built_rates()
        self.class_task = self.class_to_task()
        self.task_mask = stream.task_class_mask().to(device) if stream.task_aware else None
        self.allowed: Tensor | None = None  # classes the engine's cross-entropy scores (online, output_mask)
        if stream.online or cfg.output_mask == "experience":
            self.allowed = torch.zeros(stream.num_classes, dtype=torch.bool, device=device)
            self.cross_entropy = self.masked_cross_entropy  # type: ignore[method-assign]
        augment = getattr(self.data, "augment", None)
        self.augment: Callable[[Tensor, torch.Generator], Tensor] | None = augment
        self.generator = generator
        self.ctx = Context(model, stream, device, generator, self.prepare, self.cross_entropy, self.task_of,
                           cfg.batch_size, *([save_artifact] if save_artifact else []), kernel=self.kernel)
        strategy.setup(self.ctx)
        self.lr_schedule = self.make_lr_schedule()
        self.grad_norms: Tensor | None = torch.zeros(2, device=device) if cfg.record_grad_norms else None
        self.autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(cfg.precision)
        if cfg.precision == "16-mixed" and device.type != "cuda":
            raise LifelongError("precision='16-mixed' needs CUDA (float16 autocast with a gradient scaler); on the "
                                "CPU use precision='bf16-mixed'")
        if cfg.precision == "16-mixed" and strategy.separate_gradients:
            raise LifelongError(f"{strategy.name} needs the task gradient on its own, which the float16 gradient "
                                "scaler does not give: use precision='bf16-mixed' or '32'")
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "16-mixed" else None
        self.stack: Stack | None = None  # many runs at once (lifelong.training.stacked): forward/backward batched
        self.member = 0

    def join_stack(self, stack: Stack, member: int) -> None:
        """Forward and backward through `stack` as its member `member` (refused where it cannot be exact)."""
        check_member(self)
        self.stack, self.member = stack, member

    # --- set-up ---------------------------------------------------------------------------------------
    def class_to_task(self) -> Tensor | None:
        if not self.stream.task_aware:
            return None
        table = torch.zeros(self.stream.num_classes, dtype=torch.long)
        for e in self.stream:
            table[e.classes] = e.task_id
        return table.to(self.device)

    def experience_steps(self) -> list[int]:
        """Optimizer steps of every training experience (0 for experiences learned in closed form)."""
        B, E = self.cfg.batch_size, self.cfg.epochs * (self.cfg.online_iter if self.stream.online else 1)
        return [E * math.ceil(e.num_train / B) if self.strategy.learns_by_sgd(e) else 0 for e in self.train_stream]

    def make_lr_schedule(self) -> StreamSchedule | None:
        """The stream's learning-rate schedule; None for a constant --lr and for schedule-free optimizers."""
        if not self.cfg.schedule or self.cfg.schedulefree:
            return None
        lengths = [max(n, 1) for n in self.experience_steps()]
        return StreamSchedule(self.cfg.build_schedule(), lengths, self.cfg.schedule_mode)

    def rates(self, experience: int, first_global_step: int, total: int) -> list[float] | None:
        """The rate of every step of an experience (None: leave the optimizer's rate alone)."""
        if self.lr_schedule is None:
            return None
        return [self.lr_schedule.lr_for(experience, s, first_global_step + s) for s in range(total)]

    def set_rate(self, rate: float) -> None:
        """The schedule's rate for this step. A parameter group that the optimizer built with a rate other than
        `lr` (the user's optimizer with groups of their own rates) gets the rate times its own rate / `lr`, so
        the schedule shapes every group's rate and keeps their ratios; a group built at `lr` gets the rate."""
        scales = self.rate_scales
        for i, group in enumerate(self.optimizer.param_groups):
            scale = scales[i] if i < len(scales) else None  # a group added later follows the schedule itself
            group["lr"] = rate if scale is None else rate * scale

    def built_rates(self) -> list[float | None]:
        """Each parameter group's rate relative to `lr` as the optimizer was built (None: exactly `lr`)."""
        lr = self.cfg.lr
        return [None if g["lr"] == lr or not lr else g["lr"] / lr for g in self.optimizer.param_groups]

    # --- model growth ---------------------------------------------------------------------------------
    def adapt(self, exp: Experience) -> bool:
        """Let the strategy grow the model for `exp`; rebuild the optimizer when the parameters changed (state
        kept for the parameters that stay). True when the parameter set changed."""
        model = self.strategy.adapt_model(self.model, exp)
        params = [p for p in model.parameters() if p.requires_grad]
        if model is self.model and len(params) == len(self.params) and all(
                a is b for a, b in zip(params, self.params, strict=True)):
            return False
        old = self.optimizer
        distributed.check_model(model, self.strategy.name, self.strategy.separate_gradients, self.world)
        self.model = self.ctx.model = model.to(self.device)
        self.kernels.clear()
        self.params = params
        self.optimizer = make_optimizer(self.cfg, params, self.optimizer_factory)
        self.rate_scales = self.built_rates()
        for p in params:
            if p in old.state:
                self.optimizer.state[p] = old.state[p]
        return True

    # --- the step -------------------------------------------------------------------------------------
    def prepare(self, raw: Tensor) -> Tensor:
        return self.data.prepare(raw)

    def task_of(self, y: Tensor) -> Tensor | None:
        """Task id of each label (task-aware streams), None otherwise."""
        return self.class_task[y] if self.class_task is not None else None

    def cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy over the head; task-aware streams score only the sample's task classes."""
        if self.task_mask is not None:
            logits = logits.masked_fill(~self.task_mask[self.class_task[y]], float("-inf"))
        return F.cross_entropy(logits, y)

    def masked_cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        """The cross-entropy over the classes in `self.allowed` only (the others' logits set to -inf).

        Online streams: `allowed` holds the labels seen so far, which is the same loss as a head that grows an
        output on first sight of a label (as Koh et al.'s CLIB / Si-Blurry code expands it): the softmax covers
        exactly the outputs that exist. `output_mask=experience` (SCoLe, Lesort et al. 2023): `allowed` holds
        the current experience's classes. This is the engine's loss and `Context.cross_entropy`; a strategy's
        own loss computed from raw logits sees the whole head."""
        if self.task_mask is not None:
            logits = logits.masked_fill(~self.task_mask[self.class_task[y]], float("-inf"))
        return F.cross_entropy(logits.masked_fill(~self.allowed, float("-inf")), y)  # type: ignore[operator]

    def allow_experience(self, exp: Experience) -> None:
        """`output_mask=experience`: let the cross-entropy score only `exp.classes` from now on."""
        if self.cfg.output_mask == "experience" and self.allowed is not None:
            self.allowed.zero_()
            self.allowed[exp.classes] = True

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision around the forward pass and the task loss (penalties stay in float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def batch(self, exp: Experience, idx: Tensor, experience: int | None = None) -> Batch:
        """The new data of a step as the batch's "new" segment (scored by the engine's loss), with the labels
        the experience uses (`label_map` applied), so replay memories store those. `experience` replaces
        `exp.index` as `Batch.experience` (online streams hide the boundaries)."""
        raw = exp.data.train_x.index_select(0, idx)  # a row gather: ~6x cheaper than advanced indexing
        if exp.input_map is not None:
            raw = exp.input_map(raw)
        y = exp.data.train_y.index_select(0, idx)
        if exp.label_map is not None:
            y = exp.label_map.index_select(0, y)
        return Batch(Segment.stored(raw, self.prepare, y, self.task_of(y), scored=True),
                     exp.index if experience is None else experience)

    def assemble(self, batch: Batch) -> Batch:
        """The strategy's batch, with the dataset's `augment` (if any) applied to the inputs of every segment
        (new and replayed, after the strategy assembled them), drawn from the engine's checkpointed generator.
        What segments store (`raw`, which memories keep) is untouched; evaluation never augments."""
        batch = self.strategy.training_batch(batch)
        if self.augment is None:
            return batch
        x = self.augment(batch.x, self.generator)
        start = 0
        for _, seg in batch:
            seg.x = x[start:start + len(seg)]
            start += len(seg)
        batch._x = x
        return batch

    def step(self, exp: Experience, idx: Tensor, experience: int | None = None, observe: bool = True) -> Tensor:
        """One optimizer step on the training samples `idx` of `exp`, through the strategy; returns the loss.
        `observe`: the strategy's `observe` hook runs after it (False for the repeated steps of an online
        stream's incoming batch, which memories must receive once).

        In a data-parallel run (lifelong.training.distributed) every rank assembles the full batch, forwards its
        shard of the rows, all-gathers the logits into the full `Outputs`, backpropagates the objective over N and
        sums the gradients over the ranks; the hooks see the full batch and outputs."""
        strategy, opt, world = self.strategy, self.optimizer, self.world
        batch = self.assemble(self.batch(exp, idx, experience))
        with self.autocast():
            out = batch.split(self.forward(batch.x))
            loss = strategy.loss(batch, out)
            if loss is None:
                names, y = batch.scored()
                loss = self.cross_entropy(out.rows(names), y)
        loss = loss.float()
        extra = strategy.penalty(batch, out)
        opt.zero_grad(set_to_none=True)
        grads = Gradients(self.params)
        scale = self.scaler.scale if self.scaler is not None else (lambda t: t)
        objective = loss if extra is None else loss + extra
        if strategy.separate_gradients:  # refused in data-parallel runs
            loss.backward(retain_graph=extra is not None)
            grads.task = [None if p.grad is None else p.grad.clone() for p in self.params]
            if extra is not None:
                extra.backward()
        elif world.active:
            scale(objective / world.size).backward()
            distributed.all_reduce_gradients(self.params)
        else:
            self.backward(scale(objective))
        if self.scaler is not None:
            self.scaler.unscale_(opt)  # strategies and the norms see the true gradients
        strategy.before_step(batch, out, grads)
        if self.grad_norms is not None:
            self.grad_norms = gradient_norms(self.params)  # the gradient actually applied (after projections)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        strategy.after_step(batch, out)
        if observe:
            strategy.observe(batch, out)
        return objective.detach()

    def backward(self, objective: Tensor) -> None:
        """Back-propagate `objective` (in a stack of runs: one backward with the other members')."""
        if self.stack is None:
            objective.backward()
        else:
            self.stack.backward(self.member, objective)

    def kernel(self, rows: int) -> contextlib.AbstractContextManager:
        """The context of the model's forward pass over `rows` rows: oneDNN's kernel for its large float32
        linear layers on a CPU (lifelong.training.kernels; `linear_kernel="torch"`: none)."""
        make = self.kernels.get(rows)
        if make is None:
            make = self.kernels[rows] = linear_kernel(self.cfg.linear_kernel, self.device, self.model, rows)
        return make()

    def forward(self, x: Tensor) -> Tensor:
        """The model's logits for `x`; in a data-parallel run, this rank's shard forwarded and all ranks'
        gathered (differentiably) into the logits of every row; in a stack of runs, batched with the other
        members' forwards."""
        if self.stack is not None:
            return self.stack.forward(self.member, self, x)
        if len(x) == 1 and self.model.training:
            with norms_in_eval_mode(self.model):
                return self.model(x)
        if not self.world.active:
            with self.kernel(len(x)):
                return self.model(x)
        lo, hi = distributed.shard(len(x), self.world)
        with self.kernel(hi - lo):
            shard = self.model(x[lo:hi])
        return distributed.gather_rows(shard, len(x), self.world)
