"""Many runs at once: K runs train in lockstep in one process, their forward and backward passes batched.

Every member is a whole run on the one engine (its own strategy, optimizer, generator, evaluator and run
directory), trained in a thread of its own. Only the learner's model forward and its backward go through the
`Stack`; a round collects one call from every member still training, then

    forward   members with the same model structure and input shape are forwarded as one: one `torch.func.vmap`
              of `functional_call` over their stacked parameters and buffers (`Stacked`: the members' own
              tensors are views of them, so nothing is copied per round and BatchNorm's running statistics
              update in place) and their stacked inputs; member k gets its slice.
    backward  one `torch.autograd.backward` over every member's objective: the gradient of their sum, in which
              the stacked parameters' slice k receives exactly the gradient of member k's objective (the other
              members' terms contribute exact zeros to it); the slices are then added to the members' own
              parameters' gradients.

Members whose models differ or whose inputs differ in shape in a round (or a model `vmap` cannot batch) are
forwarded one after another in that round: still one run each, not batched. Everything else a member does
(its strategy's own forwards, penalties, the optimizer step, evaluation, checkpoints) runs in its own thread,
one member at a time (a member hands on while it waits for a round: no two threads contend for the GIL).

Equal to separate runs within float rounding: a batched matrix product may round differently from single ones
(over a whole Split-Digits run: accuracy matrices identical, final weights within 2.1e-7; over the 1,875 steps
of Split-FashionMNIST such last-bit differences grow as any reordering of a float sum does in SGD, and final
accuracies differ by a few tenths of a percent either way). Randomness drawn from torch's *global* generator
after a model is built (dropout, parameters a strategy creates mid-run) is shared by the members, so such draws
differ from separate runs. Refused: strategies that back-propagate their task loss on its own
(`separate_gradients`: SI, RWalk), float16 with a gradient scaler, data-parallel runs.

Speed: on a CPU a batched product costs what the K products cost, and vmap's batched layers add their own
overhead (benchmarks/bench_stacked.py measures it); the stack is for GPUs, where K small models' kernels
become one launch each.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lifelong.errors import LifelongError

if TYPE_CHECKING:
    from lifelong.strategies import Strategy
    from lifelong.training.config import RunConfig
    from lifelong.training.engine import Engine
    from lifelong.training.learner import Learner


class StackAborted(LifelongError):
    """The stack was stopped (the user interrupted it, or the process is shutting it down)."""


def refusal(strategy: Strategy, precision: str, data_parallel: bool = False) -> str | None:
    """Why a run cannot be a member of a stack (one line), or None when it can."""
    if strategy.separate_gradients:
        return (f"{strategy.name} back-propagates its task loss on its own, which a stack of runs (one backward "
                "for all) cannot give: train it without --stack")
    if precision == "16-mixed":
        return ("precision='16-mixed' scales each run's loss by its own factor, which one backward for a stack of "
                "runs cannot follow: use precision='bf16-mixed' or '32' with --stack")
    if data_parallel:
        return "a data-parallel run cannot be a member of a stack of runs"
    return None


def check_member(learner: Learner) -> None:
    """Refuse, in one line, a run that cannot be a member of a stack."""
    reason = refusal(learner.strategy, learner.cfg.precision, learner.world.active)
    if reason is not None:
        raise LifelongError(reason)


def stackable(cfg: RunConfig) -> bool:
    """Whether runs of `cfg` can be members of a stack (compare and tune run the others one at a time)."""
    from lifelong.strategies import make_strategy

    return refusal(make_strategy(cfg.strategy, cfg.hparams), cfg.precision) is None


def unbatchable(model: nn.Module) -> bool:
    """Whether members with this model are forwarded one by one (same results, no speed-up): a forward that runs
    hooks (a strategy's, such as HAT's gates or LUCIR's feature capture, or the user's: the batched forward runs
    one member's model for all, so its hooks would act on every member's rows), or a model with tied or shared
    parameters (a module used twice: a failed batched forward left its parameters swapped for batched tensors)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return True
    return sum(1 for _ in model.named_parameters(remove_duplicate=False)) != sum(1 for _ in model.parameters())


def structure(model: nn.Module) -> tuple[Any, ...]:
    """What must agree, besides the input, for members' models to be forwarded as one: module types, parameter
    and buffer names and shapes."""
    return (tuple((n, type(m)) for n, m in model.named_modules()),
            tuple((n, p.shape, p.dtype, p.requires_grad) for n, p in model.named_parameters()),
            tuple((n, b.shape, b.dtype) for n, b in model.named_buffers()))


class Stack:
    """The rendezvous of K members' forward and backward calls (see the module docstring)."""

    def __init__(self, members: int) -> None:
        self.cond = threading.Condition()
        self.size = members  # runs in the stack (train_seconds of each is the stack's wall time)
        self.active = members
        self.calls: dict[int, tuple[str, Any]] = {}
        self.answers: dict[int, Any] = {}
        self.round = 0
        self.running = False
        self.stopped: BaseException | None = None
        self.groups: dict[tuple[Any, ...], Stacked] = {}
        self.stats = {"rounds": 0, "batched_forwards": 0, "separate_forwards": 0, "stacks_built": 0,
                      "not_batched": ""}

    # --- what members call ------------------------------------------------------------------------------
    def forward(self, member: int, learner: Learner, x: Tensor) -> Tensor:
        return self.call(member, "forward", (learner, x))

    def backward(self, member: int, objective: Tensor) -> None:
        self.call(member, "backward", objective)

    def leave(self) -> None:
        """A member finished (or failed): rounds no longer wait for it."""
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def stop(self, reason: BaseException) -> None:
        """Every member's next (or current) call raises `reason`'s kind: the user interrupted the stack."""
        with self.cond:
            self.stopped = reason
            self.cond.notify_all()

    # --- the rendezvous ---------------------------------------------------------------------------------
    def call(self, member: int, kind: str, payload: Any) -> Any:
        with self.cond:
            self.raise_if_stopped()
            mine = self.round
            self.calls[member] = (kind, payload)
            while True:
                self.raise_if_stopped()
                if self.round != mine:
                    return self.answer(member)
                if not self.running and len(self.calls) >= self.active:
                    self.running = True
                    calls, self.calls = self.calls, {}
                    break
                self.cond.wait()
        try:
            answers = self.execute(calls)
        except Exception as err:  # noqa: BLE001 - a failure of the round itself ends every member in it
            answers = {m: StackAborted(f"a round of the stack of runs failed: {err}") for m in calls}
        with self.cond:
            self.answers.update(answers)
            self.round += 1
            self.stats["rounds"] += 1
            self.running = False
            self.cond.notify_all()
            return self.answer(member)

    def answer(self, member: int) -> Any:
        value = self.answers.pop(member)
        if isinstance(value, BaseException):
            raise value
        return value

    def raise_if_stopped(self) -> None:
        if self.stopped is not None:
            raise type(self.stopped)() if isinstance(self.stopped, KeyboardInterrupt) else \
                StackAborted(f"the stack of runs was stopped: {self.stopped}")

    # --- one round --------------------------------------------------------------------------------------
    def execute(self, calls: dict[int, tuple[str, Any]]) -> dict[int, Any]:
        """A round: backward calls first (their graphs are from the forwards before), then forward calls."""
        answers: dict[int, Any] = {}
        forwards = {m: p for m, (kind, p) in calls.items() if kind == "forward"}
        backwards = {m: p for m, (kind, p) in calls.items() if kind == "backward"}
        if backwards:
            answers.update(self.backward_all(backwards))
        if forwards:
            answers.update(self.forward_all(forwards))
        return answers

    def backward_all(self, objectives: dict[int, Tensor]) -> dict[int, Any]:
        """One backward over every member's objective (one that needs no gradient raises as it would alone),
        then each member's slice of the stacked parameters' gradient added to its own parameters'."""
        answers: dict[int, Any] = {}
        joint = {m: o for m, o in objectives.items() if o.requires_grad}
        for m, o in objectives.items():
            if m not in joint:
                try:
                    o.backward()
                except RuntimeError as err:
                    answers[m] = err
        try:
            if joint:
                torch.autograd.backward(list(joint.values()))
            answers.update(dict.fromkeys(joint))
        except RuntimeError as err:
            answers.update({m: copy.copy(err) for m in joint})
        for group in self.groups.values():
            group.hand_out_gradients()
        return answers

    def forward_all(self, calls: dict[int, tuple[Learner, Tensor]]) -> dict[int, Any]:
        """Forward every member's input: one vmapped forward per set of members that agree in structure.

        Members are grouped cheaply (model class and mode, input shape and type, autocast); a group whose stack
        still holds its members' parameters is forwarded at once; otherwise the group is split by full `structure`
        and each part stacked anew (the first round, and after a strategy changed a model)."""
        rough: dict[tuple[Any, ...], list[int]] = {}
        for m in sorted(calls):  # in member order: a group's key is the same every round
            learner, x = calls[m]
            model = learner.model
            rough.setdefault((type(model), model.training, x.shape, x.dtype, x.device, learner.autocast_dtype),
                             []).append(m)
        parts: list[list[int]] = []
        for members in rough.values():
            group = self.groups.get(tuple(members))
            if len(members) > 1 and group is not None and group.holds([calls[m][0].model for m in members]):
                parts.append(members)
                continue
            exact: dict[tuple[Any, ...], list[int]] = {}
            for m in members:
                exact.setdefault(structure(calls[m][0].model), []).append(m)
            for same in exact.values():
                if len(same) > 1 and not self.stats["not_batched"]:
                    for stale in [key for key in self.groups if set(key) & set(same)]:
                        del self.groups[stale]  # its members are views of the new stack from now on
                    self.groups[tuple(same)] = Stacked([calls[m][0].model for m in same])
                    self.stats["stacks_built"] += 1
                parts.append(same)
        answers: dict[int, Any] = {}
        for members in parts:
            if len(members) > 1 and not self.stats["not_batched"] and not any(unbatchable(calls[m][0].model)
                                                                              for m in members):
                try:
                    answers.update(self.batched(self.groups[tuple(members)], members, calls))
                    self.stats["batched_forwards"] += 1
                    continue
                except RuntimeError as err:  # an op vmap cannot batch: this stack forwards one by one from now on
                    self.stats["not_batched"] = str(err).splitlines()[0][:200]
                    warnings.warn(f"torch.func.vmap cannot batch this model ({self.stats['not_batched']}): the stack "
                                  "forwards its members one by one from now on (same results, no speed-up)",
                                  stacklevel=2)
            for m in members:
                learner, x = calls[m]
                try:
                    with torch.enable_grad(), learner.autocast():
                        answers[m] = learner.model(x)
                except Exception as err:  # noqa: BLE001 - the member's own failure, raised in its own thread
                    answers[m] = err
                self.stats["separate_forwards"] += 1
        return answers

    @staticmethod
    def batched(group: Stacked, members: list[int], calls: dict[int, tuple[Learner, Tensor]]) -> dict[int, Tensor]:
        """One vmapped forward of the members' models (their stack `group`) on their inputs (same shape)."""
        from torch.func import functional_call, vmap

        base = calls[members[0]][0].model
        xs = torch.stack([calls[m][1] for m in members])

        def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(base, (p, b), (x,))

        with torch.enable_grad(), calls[members[0]][0].autocast():
            out = vmap(one, randomness="different")(group.params, group.buffers, xs)
        return {m: out[k] for k, m in enumerate(members)}


class Stacked:
    """The parameters and buffers of members with the same structure, stacked along a first dimension, and the
    members' own tensors turned into views of them (`p.data = stacked[k]`): each member's optimizer, strategy,
    checkpoints and evaluation keep working on its own parameters, which are the stacked ones, so a round
    forwards the stack without copying it. The stacked parameters are leaves of their own; after a backward,
    member k's slice of their gradient is added to its parameters' gradients (which may already hold terms
    of the member's own, e.g. a penalty on its weights).

    Linear layers' weights are stored [K, in, out] in memory (viewed as [K, out, in]): the layout in which
    a batched matrix product gives their gradient, which would otherwise be transposed into place by a copy
    on every step."""

    def __init__(self, models: list[nn.Module]) -> None:
        self.models = models
        linear = {f"{n}.weight" if n else "weight" for n, m in models[0].named_modules() if isinstance(m, nn.Linear)}
        named = [dict(model.named_parameters()) for model in models]
        held = [dict(model.named_buffers()) for model in models]
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.members_params: dict[str, list[Tensor]] = {}
        self.members_buffers: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for n in named[0]:
                own = [p[n] for p in named]
                stacked = torch.stack([p.detach() for p in own])
                if n in linear and stacked.dim() == 3:
                    stacked = stacked.mT.contiguous().mT
                self.params[n] = stacked.requires_grad_(own[0].requires_grad)
                self.members_params[n] = own
            for n in held[0]:
                own = [b[n] for b in held]
                self.buffers[n] = torch.stack(own)
                self.members_buffers[n] = own
        self.ptrs: dict[str, list[int]] = {}
        for stacked, own in ((self.params, self.members_params), (self.buffers, self.members_buffers)):
            for n, whole in stacked.items():
                for k, t in enumerate(own[n]):
                    t.data = whole[k].detach()
                self.ptrs[n] = [t.data_ptr() for t in own[n]]

    def holds(self, models: list[nn.Module]) -> bool:
        """True while these models are the stack's members and every parameter and buffer of theirs is still
        its view of the stack (a strategy that replaced one, or grew the model, makes a new stack)."""
        if len(models) != len(self.models) or any(a is not b for a, b in zip(models, self.models, strict=True)):
            return False
        for k, model in enumerate(models):
            for tensors, own in ((model.parameters(), self.members_params), (model.buffers(), self.members_buffers)):
                count = 0
                for n, t in zip(own, tensors, strict=False):
                    if own[n][k] is not t or t.data_ptr() != self.ptrs[n][k]:
                        return False
                    count += 1
                if count != len(own) or next(iter(tensors), None) is not None:
                    return False
        return True

    def hand_out_gradients(self) -> None:
        """Add member k's slice of each stacked gradient to member k's parameter's gradient."""
        for n, stacked in self.params.items():
            g = stacked.grad
            if g is None:
                continue
            stacked.grad = None
            for k, p in enumerate(self.members_params[n]):
                if p.grad is None:
                    p.grad = g[k]
                else:
                    p.grad.add_(g[k])


def train_together(builders: Sequence[Callable[[], Engine]], run: Callable[[Engine], Any],
                   on_done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Build and run K engines as one stack; each member's `run(engine)` result, or the exception it raised.

    Each member is built and trained in a thread of its own, one member running at a time (a baton it hands on
    while it waits for a round), so each engine seeds torch's generator and initialises its model undisturbed,
    as in a process of its own. `on_done(k, outcome)` is called in
    member k's thread as it ends. Ctrl-C stops every member at its next forward or backward (each records
    itself as interrupted, resumable) and is raised here."""
    stack = Stack(len(builders))
    outcomes: list[Any] = [None] * len(builders)

    def member(k: int) -> None:
        with stack.cond:  # the baton: one member runs at a time; it passes on while it waits for a round
            try:
                engine = builders[k]()
                engine.learner.join_stack(stack, k)
                outcomes[k] = run(engine)
            except BaseException as err:  # noqa: BLE001 - handed to the caller with the member's index
                outcomes[k] = err
            finally:
                stack.leave()
        if on_done is not None:
            on_done(k, outcomes[k])

    threads = [threading.Thread(target=member, args=(k,), name=f"stack-member-{k}", daemon=True)
               for k in range(len(builders))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
    except KeyboardInterrupt as interrupt:
        stack.stop(interrupt)
        for t in threads:
            t.join()
        raise
    return outcomes
