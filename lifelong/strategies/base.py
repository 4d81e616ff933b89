"""The strategy contract: a few hooks on the one training loop, nothing else.

The engine owns the step. One step of experience `exp`, in the order the hooks run:

    batch = Batch(new segment)                        # the current data, always segment "new"
    batch = strategy.training_batch(batch)            # add named segments: replayed or extra inputs
    out   = batch.split(model(batch.x))               # logits per segment, by name
    task  = strategy.loss(batch, out)                 # None: the engine's cross-entropy on the scored segments
    extra = strategy.penalty(batch, out)              # None or extra loss terms
    backward (task and extra separately when the strategy sets `separate_gradients`)
    strategy.before_step(batch, out, grads)           # gradients may be edited here (projection, masks)
    optimizer.step()
    strategy.after_step(batch, out)                   # per-step bookkeeping (importances, caches)
    strategy.observe(batch, out)                      # once per incoming batch: store the new samples

On online streams each incoming batch is trained on `online_iter` times; `observe` runs after the first of those
steps only, so a memory receives every sample once (as the authors' online code does); offline, every step sees a
new batch and `observe` follows every `after_step`.

Around the steps of an experience:

    model = strategy.adapt_model(model, exp)          # grow heads / backbones; the optimizer follows
    strategy.begin_experience(exp)
    if strategy.learns_by_sgd(exp): the SGD steps
    else: strategy.fit_experience(exp)                # closed-form learners absorb the experience instead
    strategy.end_experience(exp)                      # optimizer in eval mode (schedule-free: averaged weights)

Every evaluation (end of experience, continual probe, decay branches) scores `strategy.predict(model, x)`,
in eval mode with gradients off. A strategy that overrides `predict` is evaluated on the training thread (the
background probe only runs the model's own forward).

What survives a resume: the model, the optimizer, the engine's RNG and whatever `state_dict` returns. That state
must load with `torch.load(weights_only=True)`: tensors, numbers, strings and lists/dicts/tuples of them. Model
growth is replayed on resume by calling `adapt_model` again for every experience already begun, so it must
depend only on the experience (not on learned weights, which the checkpoint then overwrites).

Hyperparameters are declared in `params`. In a composition (`er+lwf`) each part keeps its own; they are
addressed as `lwf.alpha`, and a bare name is accepted when exactly one part declares it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError, unknown_name
from lifelong.params import Param, resolve
from lifelong.registry import Registry

NEW = "new"


class Segment:
    """Rows of one batch that belong together: inputs, labels (None: unlabelled) and per-row extras.

    `scored`: the engine's cross-entropy covers these rows (the new data, plain replay); a segment that is not
    scored is read only by the strategy that added it (e.g. DER's logit targets).

    A segment made from stored inputs (`Segment.stored`, `Context.segment`) prepares `x` from `raw` when it is
    first read; `Batch.x` prepares all such segments of a step in one conversion (uint8 -> float once per step)
    and each segment's `x` is then a view of `Batch.x` (read it, do not modify it in place).
    """

    __slots__ = ("_x", "y", "raw", "task", "scored", "extras", "_prepare")

    def __init__(self, x: Tensor | None, y: Tensor | None = None, raw: Tensor | None = None,
                 task: Tensor | None = None, scored: bool = False, extras: dict[str, Tensor] | None = None) -> None:
        self._x, self.y, self.raw, self.task, self.scored = x, y, raw, task, scored
        self.extras: dict[str, Tensor] = {} if extras is None else extras
        self._prepare: Callable[[Tensor], Tensor] | None = None
        if x is None and raw is None:
            raise LifelongError("a batch segment needs its inputs (x) or its stored inputs (raw)")

    @classmethod
    def stored(cls, raw: Tensor, prepare: Callable[[Tensor], Tensor], y: Tensor | None = None,
               task: Tensor | None = None, scored: bool = False, extras: dict[str, Tensor] | None = None) -> Segment:
        """A segment of stored inputs whose model inputs are `prepare(raw)`, computed when first needed.
        `prepare` must act row by row (as dataset preparation does), so preparing several segments together
        gives the same numbers as preparing each alone."""
        seg = cls(None, y, raw, task, scored, extras)
        seg._prepare = prepare
        return seg

    @property
    def x(self) -> Tensor:
        if self._x is None:
            self._x = self._prepare(self.raw)  # type: ignore[misc]
        return self._x

    @x.setter
    def x(self, value: Tensor) -> None:
        self._x = value

    @property
    def pending(self) -> bool:
        """Whether `x` is still to be prepared from `raw`."""
        return self._x is None

    def __len__(self) -> int:
        return len(self._x) if self._x is not None else len(self.raw)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shape = tuple(self.raw.shape if self._x is None else self._x.shape)  # type: ignore[union-attr]
        return f"Segment(rows={shape[0]}, scored={self.scored}, extras={sorted(self.extras)})"


class Batch:
    """One training step's inputs, as named segments in a fixed order ("new" first).

    `x` is all segments' inputs stacked for one forward pass; `split(logits)` gives the logits back by name,
    so each strategy reads its own rows whatever else is composed with it.
    """

    def __init__(self, new: Segment, experience: int) -> None:
        self.segments: dict[str, Segment] = {NEW: new}
        self.experience = experience
        self._x: Tensor | None = None

    @property
    def new(self) -> Segment:
        return self.segments[NEW]

    def add(self, name: str, segment: Segment) -> None:
        """Append a segment; names are unique (a strategy prefixes them with its own name)."""
        if name in self.segments:
            raise LifelongError(f"batch segment '{name}' added twice: two parts of a composition use one name")
        self.segments[name] = segment
        self._x = None

    def __contains__(self, name: str) -> bool:
        return name in self.segments

    def __getitem__(self, name: str) -> Segment:
        return self.segments[name]

    def __iter__(self) -> Iterator[tuple[str, Segment]]:
        return iter(self.segments.items())

    @property
    def x(self) -> Tensor:
        if self._x is None:
            segs = list(self.segments.values())
            if len(segs) == 1:
                self._x = segs[0].x
            elif self._prepare_together(segs):
                x = segs[0]._prepare(torch.cat([s.raw for s in segs]))  # type: ignore[misc]
                start = 0
                for s in segs:
                    s.x = x[start:start + len(s.raw)]  # type: ignore[arg-type]
                    start += len(s.raw)  # type: ignore[arg-type]
                self._x = x
            else:
                self._x = torch.cat([s.x for s in segs])
        return self._x

    @staticmethod
    def _prepare_together(segs: list[Segment]) -> bool:
        """Whether every segment still holds only stored inputs of one kind, prepared by one function."""
        first = segs[0]
        if not first.pending:
            return False
        raw = first.raw
        return all(s.pending and s._prepare == first._prepare and s.raw.dtype == raw.dtype  # type: ignore[union-attr]
                   and s.raw.shape[1:] == raw.shape[1:] and s.raw.device == raw.device  # type: ignore[union-attr]
                   for s in segs[1:])

    def split(self, logits: Tensor) -> Outputs:
        """The model's output for `x`, cut back into segments."""
        return Outputs(logits, {name: len(s) for name, s in self.segments.items()})

    def scored(self) -> tuple[list[str], Tensor]:
        """Names of the segments the engine's cross-entropy covers, and their labels stacked."""
        names = [n for n, s in self.segments.items() if s.scored]
        ys = [self.segments[n].y for n in names]
        return names, ys[0] if len(ys) == 1 else torch.cat(ys)


class Outputs:
    """Logits of a batch, readable per segment (`out["new"]`) or all together (`out.all`)."""

    def __init__(self, logits: Tensor, sizes: dict[str, int]) -> None:
        self.all = logits
        self.slices: dict[str, slice] = {}
        start = 0
        for name, n in sizes.items():
            self.slices[name] = slice(start, start + n)
            start += n

    def __getitem__(self, name: str) -> Tensor:
        return self.span(self.slices[name].start, self.slices[name].stop)

    def span(self, start: int, stop: int) -> Tensor:
        """Rows start..stop-1 of the logits; all of them is `all` itself, not a slice of it (a slice adds a
        node to the autograd graph whose backward copies the gradient into a zero tensor: ~5 us a step)."""
        return self.all if start == 0 and stop == len(self.all) else self.all[start:stop]

    def __contains__(self, name: str) -> bool:
        return name in self.slices

    def rows(self, names: list[str]) -> Tensor:
        """Logits of several segments in order (a view when they are adjacent)."""
        first, last = self.slices[names[0]], self.slices[names[-1]]
        if last.stop - first.start == sum(self.slices[n].stop - self.slices[n].start for n in names):
            return self.span(first.start, last.stop)
        return torch.cat([self[n] for n in names])


@dataclass
class Gradients:
    """Gradients of one step, handed to `before_step`. `task` (the loss without penalties) is filled only when
    the strategy sets `separate_gradients`; the parameters' `.grad` always hold the total and may be edited."""

    params: list[nn.Parameter]
    task: list[Tensor | None] | None = None

    def total(self) -> list[Tensor | None]:
        return [p.grad for p in self.params]


@dataclass
class Context:
    """What the engine lends a strategy: the model (replaced when `adapt_model` grows it), the stream, the
    device, a private RNG (checkpointed), input preparation, the engine's loss, and `save_artifact(name, obj)`,
    which writes `obj` (torch.save, loadable with weights_only) as `<name>.pt` into the run directory and
    records it in the run store (returns the path; None when the run has no directory)."""

    model: nn.Module
    stream: Stream
    device: torch.device
    generator: torch.Generator
    prepare: Callable[[Tensor], Tensor]
    cross_entropy: Callable[[Tensor, Tensor], Tensor]
    task_of: Callable[[Tensor], Tensor | None]
    batch_size: int
    save_artifact: Callable[[str, Any], Path | None] = lambda name, obj: None
    kernel: Callable[[int], AbstractContextManager] = lambda rows: nullcontext()

    def forward(self, x: Tensor, model: nn.Module | None = None) -> Tensor:
        """`model` (default: the run's) on `x`, as the engine runs its own forward passes (on a CPU: oneDNN's
        kernel for large linear layers, lifelong.training.kernels); e.g. a teacher's targets."""
        with self.kernel(len(x)):
            return (self.model if model is None else model)(x)

    def segment(self, raw: Tensor, y: Tensor | None, scored: bool = False, **extras: Tensor) -> Segment:
        """A segment from stored (compact) inputs: prepared for the model, with each row's task id."""
        return Segment.stored(raw, self.prepare, y, None if y is None else self.task_of(y), scored, extras)


class Strategy:
    """Naive fine-tuning, and the base of every method: each hook does nothing by default."""

    name: ClassVar[str] = "naive"
    description: ClassVar[str] = "fine-tune on each experience in turn (lower bound: forgets)"
    params: ClassVar[dict[str, Param]] = {}
    neutral: ClassVar[dict[str, Any]] = {}  # hyperparameters that make this strategy train exactly like naive
    separate_gradients: ClassVar[bool] = False  # before_step needs the task-loss gradient on its own
    replaces_stream: ClassVar[bool] = False  # references (joint, cumulative) that rebuild the stream
    composable: ClassVar[bool] = True  # False: refuses to be combined with '+' (e.g. its loss covers every row)
    alone_because: ClassVar[str] = "its loss and memory cover every row of the step"  # why, when not composable
    family: ClassVar[str] = "baseline"  # replay, regularisation, reference, analytic, isolation, ... (for listing
    # and for the contract tests, which compose every pair of replay and regularisation strategies)
    task_free: ClassVar[bool] = False  # learns without experience boundaries (runs on online streams): its
    # begin/end_experience only do bookkeeping that one call before and one after the whole stream satisfies

    def __init__(self, **hparams: Any) -> None:
        self.hp = resolve(self.params, hparams, self.name)
        self.ctx: Context | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.hp.items())})"

    def overrides(self, hook: str) -> bool:
        """Whether this strategy defines `hook` itself (rather than inheriting the base's no-op)."""
        return getattr(type(self), hook) is not getattr(Strategy, hook)

    # --- once ---------------------------------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        """Called once before training (and before a checkpoint is loaded), with the engine's context."""
        self.ctx = ctx

    def adapt_stream(self, stream: Stream) -> Stream:
        """The stream this strategy trains on (references such as joint training rebuild it)."""
        return stream

    # --- per experience -----------------------------------------------------------------------------------
    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        """Before `begin_experience`: return the model to train on `exp` (the same one, or a grown one).

        A new parameter set makes the engine rebuild the optimizer (state kept for parameters that stay).
        Replayed on resume, so it must depend only on `exp`, not on learned weights."""
        return model

    def begin_experience(self, exp: Experience) -> None:
        """Before the first step of `exp` (not called again when a run resumes inside `exp`)."""

    def learns_by_sgd(self, exp: Experience) -> bool:
        """Whether `exp` is learned by the engine's SGD steps (True) or by `fit_experience` (False). Asked when
        the run is planned (step counts, schedules), so it must depend only on `exp`."""
        return True

    def fit_experience(self, exp: Experience) -> None:
        """Learn `exp` without SGD steps (closed-form learners); called instead of the steps when
        `learns_by_sgd(exp)` is False. The model is in eval mode, gradients are on (the strategy decides)."""

    def end_experience(self, exp: Experience) -> None:
        """After the last step of `exp`, before it is evaluated; the optimizer is in eval mode."""

    # --- per step -----------------------------------------------------------------------------------------
    def training_batch(self, batch: Batch) -> Batch:
        """Add segments to the batch (replayed samples, extra inputs). Do not change other segments."""
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor | None:
        """The task loss that replaces the engine's cross-entropy over the scored segments, or None."""
        return None

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        """Extra loss terms for this step (distillation, regularisation), or None."""
        return None

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        """After backward, before the optimizer step: the parameters' gradients may be edited in place."""

    def after_step(self, batch: Batch, out: Outputs) -> None:
        """After every optimizer step (e.g. accumulate importances, drop caches of the old weights)."""

    def observe(self, batch: Batch, out: Outputs) -> None:
        """After the step, once per incoming batch (e.g. add the new samples to a memory; see the module
        docstring for online streams, where a batch is trained on several times)."""

    # --- evaluation ---------------------------------------------------------------------------------------
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Scores per class for prepared inputs `x` (arg-max is the prediction). Called with gradients off."""
        return model(x)

    # --- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-stream (buffers, anchors, teachers); loads with weights_only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


EXCLUSIVE_HOOKS = ("loss", "predict", "learns_by_sgd", "adapt_stream")


class Compose(Strategy):
    """Several strategies on one loop (e.g. `er+lwf`): hooks run in order, penalties add up, each part adds and
    reads its own batch segments. At most one part may replace the loss, the prediction, the stream or SGD."""

    name = "compose"
    description = "several strategies combined with '+'"

    def __init__(self, parts: list[Strategy]) -> None:
        self.parts = parts
        self.hp = {f"{p.name}.{k}": v for p in parts for k, v in p.hp.items()}
        self.ctx = None
        names = [p.name for p in parts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise LifelongError(f"'{'+'.join(names)}': {', '.join(twice)} appears twice")
        for hook in EXCLUSIVE_HOOKS:
            owners = [p.name for p in parts if p.overrides(hook) or (hook == "adapt_stream" and p.replaces_stream)]
            if len(owners) > 1:
                raise LifelongError(f"'{'+'.join(names)}': {' and '.join(owners)} both replace {hook.replace('_', ' ')}"
                                    " and cannot be combined")
        loss_owner = [p for p in parts if p.overrides("loss")]
        replays = [p.name for p in parts if p.family == "replay" and p not in loss_owner]
        if loss_owner and replays:
            raise LifelongError(f"'{'+'.join(names)}': {loss_owner[0].name} replaces the loss, so the rows "
                                f"{', '.join(replays)} replays would not be scored: use them separately")
        closed = next((p for p in parts if p.overrides("learns_by_sgd")), None)
        if closed is not None and closed.hp.get("base_experiences") == 0:
            others = [p.name for p in parts if p is not closed]
            raise LifelongError(f"'{'+'.join(names)}': with base_experiences=0 {closed.name} learns every experience "
                                f"in closed form, so no SGD step runs and {', '.join(others)} would do nothing: give "
                                f"-p {closed.name}.base_experiences=N (an SGD base phase) or run {closed.name} alone")
        self.separate_gradients = any(p.separate_gradients for p in parts)  # type: ignore[misc]
        self.task_free = all(p.task_free for p in parts)  # type: ignore[misc]

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.parts))

    def overrides(self, hook: str) -> bool:
        return any(p.overrides(hook) for p in self.parts)

    def owner(self, hook: str) -> Strategy:
        return next((p for p in self.parts if p.overrides(hook)), self.parts[0])

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        for p in self.parts:
            p.setup(ctx)

    def adapt_stream(self, stream: Stream) -> Stream:
        for p in self.parts:
            stream = p.adapt_stream(stream)
        return stream

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        for p in self.parts:
            model = p.adapt_model(model, exp)
        return model

    def begin_experience(self, exp: Experience) -> None:
        for p in self.parts:
            p.begin_experience(exp)

    def learns_by_sgd(self, exp: Experience) -> bool:
        return self.owner("learns_by_sgd").learns_by_sgd(exp)

    def fit_experience(self, exp: Experience) -> None:
        self.owner("learns_by_sgd").fit_experience(exp)

    def end_experience(self, exp: Experience) -> None:
        for p in self.parts:
            p.end_experience(exp)

    def training_batch(self, batch: Batch) -> Batch:
        for p in self.parts:
            batch = p.training_batch(batch)
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor | None:
        owner = self.owner("loss")
        value = owner.loss(batch, out)
        if value is not None:
            foreign = sorted({n.split(".")[0] for n, s in batch if s.scored and n != NEW
                              and n.split(".")[0] != owner.name})
            if foreign:
                raise LifelongError(f"{owner.name} replaces the loss, so the rows {', '.join(foreign)} added for "
                                    "the engine's cross-entropy would not be scored: do not combine them")
        return value

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        terms = [t for p in self.parts if (t := p.penalty(batch, out)) is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def before_step(self, batch: Batch, out: Outputs, grads: Gradients) -> None:
        for p in self.parts:
            p.before_step(batch, out, grads)

    def after_step(self, batch: Batch, out: Outputs) -> None:
        for p in self.parts:
            p.after_step(batch, out)

    def observe(self, batch: Batch, out: Outputs) -> None:
        for p in self.parts:
            p.observe(batch, out)

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return self.owner("predict").predict(model, x)

    def state_dict(self) -> dict[str, Any]:
        return {p.name: p.state_dict() for p in self.parts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p in self.parts:
            p.load_state_dict(state[p.name])


def check_strategy(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise LifelongError(f"strategy '{name}' is not a subclass of lifelong.strategies.Strategy")


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "lifelong.strategies", check_strategy)


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make `cls` usable by its `name` (`--strategy NAME`, `make_strategy`, compositions)."""
    if "name" not in cls.__dict__:
        raise LifelongError(f"{cls.__qualname__} needs a name of its own to be registered (name = \"...\"); it "
                            f"would inherit '{cls.name}'")
    return STRATEGIES.register(cls.name)(cls)


def split_hparams(spec: str, classes: list[type[Strategy]], hparams: dict[str, Any]) -> list[dict[str, Any]]:
    """Each part's hyperparameters from `part.name=value` or an unambiguous bare `name=value`."""
    per_part: list[dict[str, Any]] = [{} for _ in classes]
    by_name = {c.name: i for i, c in enumerate(classes)}
    qualified = {f"{c.name}.{k}" for c in classes for k in c.params} if len(classes) > 1 else set()
    for key, value in hparams.items():
        part, dot, bare = key.rpartition(".")
        if dot:
            if part not in by_name:
                raise LifelongError(f"hyperparameter '{key}': '{part}' is not a part of '{spec}' "
                                    f"(parts: {', '.join(by_name)})")
            target = [by_name[part]]
        else:
            target = [i for i, c in enumerate(classes) if key in c.params]
        if not target or bare not in classes[target[0]].params:
            bare_names = {k for c in classes for k in c.params}
            raise unknown_name(f"hyperparameter of {spec}", key, (qualified | bare_names) or {"(none)"})
        if len(target) > 1:
            options = " or ".join(f"{classes[i].name}.{key}" for i in target)
            raise LifelongError(f"hyperparameter '{key}' is declared by several parts of '{spec}': say {options}")
        per_part[target[0]][bare] = value
    return per_part


def hparams_per_strategy(specs: list[str], hparams: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Hyperparameters given once for several strategies (compare, tune), shared out: a bare `name=value` goes
    to every strategy that declares `name`, `er.buffer_size=value` to the strategies with a part `er`. A name
    none of them declares is refused in one line."""
    classes = {spec: [STRATEGIES.get(name.strip()) for name in str(spec).split("+")] for spec in specs}
    out: dict[str, dict[str, Any]] = {spec: {} for spec in specs}
    for key, value in hparams.items():
        part, dot, bare = key.rpartition(".")
        takers = [spec for spec, parts in classes.items()
                  if any(bare in c.params and (not dot or c.name == part) for c in parts)]
        if not takers:
            names = {k for parts in classes.values() for c in parts for k in c.params}
            names |= {f"{c.name}.{k}" for parts in classes.values() for c in parts for k in c.params}
            raise unknown_name(f"hyperparameter of {', '.join(specs)}", key, names or {"(none)"})
        for spec in takers:
            out[spec][key if dot and len(classes[spec]) > 1 else bare] = value
    return out


def make_strategy(spec: str, hparams: dict[str, Any] | None = None) -> Strategy:
    """Build `naive`, `ewc` or a composition `er+lwf`; each part takes the hyperparameters it declares."""
    classes = [STRATEGIES.get(name.strip()) for name in str(spec).split("+")]
    per_part = split_hparams(spec, classes, dict(hparams or {}))
    parts = [c(**hp) for c, hp in zip(classes, per_part, strict=True)]
    if len(parts) == 1:
        return parts[0]
    if any(p.replaces_stream for p in parts):
        raise LifelongError(f"'{spec}': joint and cumulative are references and cannot be combined")
    alone = [p.name for p in parts if not p.composable]
    if alone:
        reasons = "; ".join(f"{p.name}: {p.alone_because}" for p in parts if not p.composable)
        raise LifelongError(f"'{spec}': {', '.join(alone)} cannot be combined with other strategies ({reasons})")
    return Compose(parts)


def task_free_names() -> list[str]:
    """Names of the registered strategies that run on online (task-free) streams."""
    return sorted(name for name in STRATEGIES if STRATEGIES.get(name).task_free)


@register
class Naive(Strategy):
    """Naive fine-tuning: the base's hooks, all no-ops; needs no boundaries."""

    name = "naive"
    task_free = True
