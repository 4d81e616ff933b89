"""The one training loop every strategy runs on.

    for each experience:                 strategy.begin_experience
        for each batch (index slices):   x, y = data[idx]; batch = strategy.training_batch(batch)
                                         loss = CE(model(x), y) + strategy.penalty(batch, logits)
                                         optimizer step; strategy.after_step(batch, logits)
        strategy.end_experience; evaluate every experience -> a row of the accuracy matrix; checkpoint

Data stays as tensors on the device; a batch is an index slice. Checkpoints are written at every
experience end and every `checkpoint_every` steps; resuming from one gives the same numbers as a run that
was never interrupted (data order is a function of (seed, experience, epoch); strategy randomness comes
from one generator whose state is checkpointed).

Learning-rate schedules (`schedule`, `schedule_mode`) are pure functions of the position: an experience's rates
are computed once when it starts and each step sets one float, so a resumed run rebuilds them from its config.
Schedule-free optimizers are switched to eval mode (their averaged weights) for every evaluation, checkpoint
and experience-end hook. Decay branches (`branch_every_experience`) are described in `Engine.branch`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import make_stream, parse_scenario
from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError
from lifelong.evaluation.metrics import summarize
from lifelong.evaluation.probe import ContinualProbe, count_correct
from lifelong.models.backbones import MODELS, make_model
from lifelong.schedules.basic import Constant
from lifelong.schedules.schedulefree_support import eval_mode, has_modes, make_schedulefree
from lifelong.schedules.stream import StreamSchedule
from lifelong.schedules.wsd import decay_branch
from lifelong.strategies import Batch, Context, Strategy, make_strategy
from lifelong.tracking.files import save_torch_atomic
from lifelong.tracking.resources import peak_rss_mb
from lifelong.tracking.store import RunStore
from lifelong.training.checkpoint import load_checkpoint, save_checkpoint
from lifelong.training.config import RunConfig

CHECKPOINT = "checkpoint.pt"
StepCallback = Callable[[int, int, float, "float | None"], None]  # (global step, total steps, loss, accuracy)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LifelongError(f"device={name!r} is not a device name (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LifelongError(f"device={name!r} requested but CUDA is not available on this machine")
    return device


def data_order(n: int, seed: int, experience: int, epochs: int) -> Tensor:
    """Positions 0..n-1 in the order they are trained on: one fresh permutation per epoch."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + experience * 7919 + 17)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])


class Engine:
    """Trains one configuration on one stream, recording into a run store when given one."""

    def __init__(self, cfg: RunConfig, store: RunStore | None = None, on_step: StepCallback | None = None,
                 dataset: ArrayDataset | None = None, stream: Stream | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.on_step = on_step
        torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        self.stream = stream or make_stream(cfg.scenario, cfg.experiences or None, cfg.class_order_list(), cfg.seed,
                                            cfg.shuffle_classes, cfg.data_dir or None, dataset=dataset)
        self.stream = self.to_device(self.stream)
        self.strategy: Strategy = make_strategy(cfg.strategy, cfg.hparams)
        self.train_stream = self.strategy.adapt_stream(self.stream)
        self.data = self.stream[0].data
        torch.manual_seed(cfg.seed)
        in_features = self.data.train_x[0].numel()
        kwargs = {"hidden": cfg.hidden_sizes()} if cfg.model == "mlp" else {}
        self.model: nn.Module = make_model(cfg.model, in_features, self.stream.num_classes, **kwargs).to(self.device)
        self.optimizer = self.make_optimizer()
        self.lr_schedule = self.make_lr_schedule()
        self.class_task = self.class_to_task()
        self.task_mask = self.stream.task_class_mask().to(self.device) if self.stream.task_aware else None
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.strategy.setup(Context(self.model, self.stream, self.device, self.generator, self.prepare,
                                    self.cross_entropy, self.task_of, cfg.batch_size))
        self.position = {"experience": 0, "step": 0, "global_step": 0}
        self.rows: list[list[float]] = []
        self.initial: list[float] = []
        self.train_seconds = 0.0
        self.pending_losses: list[tuple[int, str, float]] = []
        self.boundaries: list[int] = []
        self.curve_steps: list[int] = []
        self.curve: list[list[float | None]] = []
        self.latest_accuracy: float | None = None
        self.branches: list[dict[str, Any]] = []
        self.probe = ContinualProbe(self.stream, self.prepare, self.task_mask, cfg.eval_subsample, cfg.seed,
                                    self.model, cfg.eval_background) if cfg.eval_every else None

    @staticmethod
    def validate(cfg: RunConfig) -> None:
        """Check names and hyperparameters without loading any data (fails fast, before work starts)."""
        parse_scenario(cfg.scenario)
        make_strategy(cfg.strategy, cfg.hparams)
        MODELS.get(cfg.model)
        pick_device(cfg.device)

    # --- set-up ----------------------------------------------------------------------------------------
    def to_device(self, stream: Stream) -> Stream:
        if self.device.type == "cpu":
            return stream
        moved: dict[int, ArrayDataset] = {}
        for e in stream:
            e.data = moved.setdefault(id(e.data), e.data.to(self.device))
        return stream

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg, params = self.cfg, self.model.parameters()
        if cfg.schedulefree:
            name = cfg.optimizer.removesuffix("-schedulefree")
            extra = {"momentum": cfg.momentum} if name == "sgd" else {}
            constant = cfg.build_schedule()  # '' or 'constant' (checked by the config): its peak and warmup
            return make_schedulefree(params, name, lr=constant.peak, warmup_steps=constant.warmup,
                                     weight_decay=cfg.weight_decay, **extra)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def experience_steps(self) -> list[int]:
        """Optimizer steps of every training experience."""
        B, E = self.cfg.batch_size, self.cfg.epochs
        return [E * math.ceil(e.num_train / B) for e in self.train_stream]

    def make_lr_schedule(self) -> StreamSchedule | None:
        """The stream's learning-rate schedule; None for today's constant --lr and for schedule-free optimizers."""
        if not self.cfg.schedule or self.cfg.schedulefree:
            return None
        return StreamSchedule(self.cfg.build_schedule(), self.experience_steps(), self.cfg.schedule_mode)

    def class_to_task(self) -> Tensor | None:
        if not self.stream.task_aware:
            return None
        table = torch.zeros(self.stream.num_classes, dtype=torch.long)
        for e in self.stream:
            table[e.classes] = e.task_id
        return table.to(self.device)

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

    # --- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, exp: Experience, chunk: int = 4096) -> float:
        """Test accuracy on one experience (within its task's classes on task-aware streams)."""
        idx = exp.test_idx
        if len(idx) == 0:
            return float("nan")
        allowed = None if self.task_mask is None else self.task_mask[exp.task_id]
        correct = 0
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            correct += count_correct(self.model(self.prepare(exp.raw(part, "test"))), exp.labels(part, "test"), allowed)
        return correct / len(idx)

    def continual_evaluation(self, seen: int) -> None:
        """Queue an evaluation of experiences 0..seen-1 at the current step; record those that finished."""
        with eval_mode(self.optimizer):  # the probe snapshots the weights now
            self.probe.submit(self.position["global_step"], seen, self.model)
        self.record_curve(self.probe.collect())

    def record_curve(self, rows: list[tuple[int, list[float | None]]]) -> None:
        for step, row in rows:
            self.curve_steps.append(step)
            self.curve.append(row)
            seen_acc = [a for a in row if a is not None]
            self.latest_accuracy = sum(seen_acc) / len(seen_acc)
            if self.store is not None:
                self.store.log_curve(step, {j: a for j, a in enumerate(row) if a is not None})

    def drain_probe(self) -> None:
        """Wait for continual evaluations still in flight (before checkpoints and at the end)."""
        if self.probe is not None:
            self.record_curve(self.probe.collect(wait=True))

    def seen_experiences(self, train_index: int) -> int:
        """How many experiences of the original stream training experience `train_index` has shown."""
        if len(self.train_stream) != len(self.stream):
            return len(self.stream)
        return train_index + 1

    def evaluate(self) -> list[float]:
        """Accuracy on the test data of every experience of the (original) stream."""
        was = self.model.training
        self.model.eval()
        with eval_mode(self.optimizer):
            accs = [self.accuracy(e) for e in self.stream]
        self.model.train(was)
        return accs

    # --- checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        self.drain_probe()
        if self.store is None:
            return
        self.flush_losses()
        with eval_mode(self.optimizer):
            save_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "strategy": self.strategy.state_dict(), "generator": self.generator.get_state(),
                "position": dict(self.position), "rows": self.rows, "initial": self.initial,
                "train_seconds": self.train_seconds, "boundaries": self.boundaries,
                "curve_steps": self.curve_steps, "curve": self.curve, "branches": self.branches,
            }, self.store.dir / CHECKPOINT)

    def restore(self) -> bool:
        """Load the run's checkpoint if there is one; True if training continues from it."""
        if self.store is None:
            return False
        state = load_checkpoint(self.store.dir / CHECKPOINT)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.generator.set_state(state["generator"])
        self.position, self.rows, self.initial = state["position"], state["rows"], state["initial"]
        self.train_seconds = state["train_seconds"]
        self.boundaries, self.curve_steps, self.curve = state["boundaries"], state["curve_steps"], state["curve"]
        self.branches = state.get("branches", [])
        if has_modes(self.optimizer):
            self.optimizer.train()  # the checkpoint holds eval-mode weights; training continues in train mode
        return True

    def flush_losses(self) -> None:
        if self.store is not None and self.pending_losses:
            self.store.log_scalars(self.pending_losses)
        self.pending_losses = []

    # --- training ----------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        return sum(self.experience_steps())

    def run(self) -> dict[str, Any]:
        """Train over the whole stream (or what remains of it after a checkpoint) and return the result."""
        resumed = self.restore()
        if not resumed:
            self.initial = self.evaluate()
            if self.store is not None:
                self.store.write_accuracy_row(-1, self.initial)
        start = time.perf_counter()
        base_seconds = self.train_seconds
        for i in range(self.position["experience"], len(self.train_stream)):
            self.train_experience(self.train_stream[i], base_seconds, start)
            self.rows.append(self.evaluate())
            self.latest_accuracy = sum(self.rows[-1][: self.seen_experiences(i)]) / self.seen_experiences(i)
            self.boundaries.append(self.position["global_step"])
            if self.store is not None:
                self.store.write_accuracy_row(i, self.rows[-1])
                self.store.set_meta(boundaries=self.boundaries)
            self.position = {"experience": i + 1, "step": 0, "global_step": self.position["global_step"]}
            self.train_seconds = base_seconds + time.perf_counter() - start
            self.checkpoint()
        if self.probe is not None:
            self.probe.close()
        return self.result()

    def train_experience(self, exp: Experience, base_seconds: float, start: float) -> None:
        cfg, model, opt, strategy = self.cfg, self.model, self.optimizer, self.strategy
        B = cfg.batch_size
        steps_per_epoch = math.ceil(exp.num_train / B)
        total = steps_per_epoch * cfg.epochs
        order = exp.train_idx[data_order(exp.num_train, cfg.seed, exp.index, cfg.epochs).to(exp.train_idx.device)]
        if self.position["step"] == 0 and self.stream.boundaries_visible:
            strategy.begin_experience(exp)
        grand_total = self.total_steps()
        eval_every = cfg.eval_every
        seen = self.seen_experiences(exp.index)
        rates = None
        if self.lr_schedule is not None:
            k0, g0 = self.position["experience"], self.position["global_step"] - self.position["step"]
            rates = [self.lr_schedule.lr_for(k0, s, g0 + s) for s in range(total)]
        groups = opt.param_groups
        model.train()
        for s in range(self.position["step"], total):
            epoch, k = divmod(s, steps_per_epoch)
            idx = order[epoch * exp.num_train + k * B: epoch * exp.num_train + min((k + 1) * B, exp.num_train)]
            if rates is not None:
                for group in groups:
                    group["lr"] = rates[s]
            value = self.train_step(exp, idx).item()
            g = self.position["global_step"] = self.position["global_step"] + 1
            self.position["step"] = s + 1
            if not math.isfinite(value):
                raise LifelongError(f"loss became {value} at step {g} (experience {exp.index}): lower the "
                                    "learning rate or the penalty strength; results up to the last checkpoint "
                                    "are kept")
            self.pending_losses.append((g, "loss", value))
            if eval_every and g % eval_every == 0:
                self.continual_evaluation(seen)
            if self.on_step is not None:
                self.on_step(g, grand_total, value, self.latest_accuracy)
            if cfg.checkpoint_every and g % cfg.checkpoint_every == 0 and s + 1 < total:
                self.train_seconds = base_seconds + time.perf_counter() - start
                self.checkpoint()
        if cfg.branch_every_experience:
            self.branch(exp)
        if self.stream.boundaries_visible:
            with eval_mode(opt):
                strategy.end_experience(exp)

    def train_step(self, exp: Experience, idx: Tensor) -> Tensor:
        """One optimizer step on the training samples `idx` of `exp`, through the strategy; returns the loss."""
        strategy, opt = self.strategy, self.optimizer
        raw = exp.data.train_x[idx]
        if exp.input_map is not None:
            raw = exp.input_map(raw)
        y = exp.data.train_y[idx]
        batch = strategy.training_batch(Batch(self.prepare(raw), y, raw, self.task_of(y), exp.index, len(y)))
        logits = self.model(batch.x)
        loss = self.cross_entropy(logits[: len(batch.y)], batch.y)
        extra = strategy.penalty(batch, logits)
        if extra is not None:
            loss = loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        strategy.after_step(batch, logits)
        return loss

    def branch(self, exp: Experience) -> None:
        """A decayed checkpoint at the end of `exp`; the main branch continues exactly as without it.

        From the state after the experience's last step (before `end_experience`), train `branch_steps` more
        steps on the same experience's training data (the data already seen: nothing from the future), in a
        fresh order from a generator of its own, with the rate decaying from the current one to
        `branch_min_lr`. Strategies keep working (replay, penalties) because the branch runs on the live
        model, optimizer and strategy from an exact snapshot of their state dicts, the generator and torch's
        RNG, and all of it is put back afterwards: the same state dicts that make resume exact. The branch is
        evaluated on every experience, its weights (eval-mode for schedule-free) saved as the artifact
        `branch_exp<k>`, and its row added to `self.branches` (also in the store's meta and the result).
        """
        cfg, k, g = self.cfg, self.position["experience"], self.position["global_step"]
        started = time.perf_counter()
        length = self.experience_steps()[k]
        steps = cfg.branch_steps or max(1, round(0.1 * length))
        high = self.optimizer.param_groups[0]["lr"]
        rates = decay_branch(Constant(peak=high), 0, steps, cfg.branch_shape, cfg.branch_min_lr)
        snapshot = copy.deepcopy((self.model.state_dict(), self.optimizer.state_dict(), self.strategy.state_dict()))
        generator_state = self.generator.get_state()
        B = cfg.batch_size
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + exp.index * 7919 + 99_991)
        needed = math.ceil(steps * B / exp.num_train)
        order = torch.cat([torch.randperm(exp.num_train, generator=gen) for _ in range(needed)])
        order = exp.train_idx[order.to(exp.train_idx.device)]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.model.train()
            for i, rate in enumerate(rates):
                for group in self.optimizer.param_groups:
                    group["lr"] = rate
                loss = self.train_step(exp, order[i * B:(i + 1) * B]).item()
            accuracy = self.evaluate()
            name = f"branch_exp{k}"
            if self.store is not None:
                with eval_mode(self.optimizer):
                    save_torch_atomic(self.model.state_dict(), self.store.dir / f"{name}.pt")
                self.store.add_artifact(name, self.store.dir / f"{name}.pt", "model")
        self.model.load_state_dict(snapshot[0])
        self.optimizer.load_state_dict(snapshot[1])
        self.strategy.load_state_dict(snapshot[2])
        self.generator.set_state(generator_state)
        seen = self.seen_experiences(k)
        self.branches.append({"after_experience": k, "step": g, "steps": steps, "start_lr": high,
                              "shape": cfg.branch_shape, "accuracy": accuracy,
                              "final_accuracy": sum(accuracy[:seen]) / seen, "final_loss": loss,
                              "artifact": name if self.store is not None else None,
                              "seconds": time.perf_counter() - started})
        if self.store is not None:
            self.store.set_meta(branches=self.branches)

    def result(self) -> dict[str, Any]:
        seconds = self.train_seconds
        samples = sum(self.cfg.epochs * e.num_train for e in self.train_stream)
        return {
            "strategy": self.cfg.strategy,
            "seed": self.cfg.seed,
            **summarize(self.rows, self.initial),
            "accuracy_matrix": self.rows,
            "initial_accuracy": self.initial,
            "train_seconds": seconds,
            "samples_per_second": samples / seconds if seconds > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "hparams": dict(self.strategy.hp),
            **({"curve": {"steps": self.curve_steps, "accuracy": self.curve}} if self.cfg.eval_every else {}),
            **({"branches": self.branches} if self.cfg.branch_every_experience else {}),
        }
