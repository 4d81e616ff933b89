"""The one training loop every strategy runs on, in three stages (learner, evaluator, recorder).

    for each experience:    model = strategy.adapt_model(model, exp); strategy.begin_experience(exp)
                            SGD steps (Learner.step) -- or strategy.fit_experience(exp) for closed-form learners
                            strategy.end_experience(exp)
                            evaluate every experience (Evaluator) -> a row of the accuracy matrix; checkpoint
    every step:             continual evaluation every K steps; losses and progress (Recorder; on an
                            accelerator read from the device in batches of steps: StepLosses)

Data stays as tensors on the device; a batch is an index slice. Checkpoints are written at every experience end
and every `checkpoint_every` steps; resuming from one gives the same numbers as a run that was never interrupted
(data order is a function of (seed, experience, epoch); strategy randomness comes from one generator whose state
is checkpointed; model growth is replayed).

Online (task-free) streams (`Stream.online`) run `train_segment` instead: the strategy (which must be
`task_free`) gets `adapt_model`/`begin_experience` once before the first segment, with a view of the first
segment that holds no sample yet (nothing from the future), and `end_experience` once after the last, with a
view of everything that arrived; it never learns where segments end (`Batch.experience` counts the incoming
batches before the current one instead). Each segment is read once in its `train_idx` order, in batches of
`batch_size`; each incoming batch is (a) predicted with the current model (prequential accuracy), (b) its
labels join the seen ones (the head grows on first sight: the learner's cross-entropy and every evaluation score
only seen labels), (c) trained on with `online_iter` steps. Every `eval_every_samples` incoming samples the
model is evaluated on the test samples of the seen classes (anytime accuracy; A_auc is their mean). Segment ends
still give accuracy-matrix rows and checkpoints; a checkpoint inside a segment (at an incoming batch's end)
holds the seen labels, the prequential counts and the anytime curve, so resuming is exact.

Learning-rate schedules are pure functions of the position: an experience's rates are computed once when it
starts. In `schedule_mode=infinite`, each experience after the first continues from the weights saved just
before the previous experience's anneal (`infinite_continue=pre-anneal`, as Ibrahim et al. 2024) or from the
annealed ones. Schedule-free optimizers are switched to eval mode for every evaluation, checkpoint and
experience-end hook. Decay branches (`branch_every_experience`) are described in `Engine.branch`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import parse_scenario
from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError, is_out_of_memory
from lifelong.evaluation.metrics import summarize
from lifelong.evaluation.online import evaluation_points, online_summary
from lifelong.models.backbones import MODELS
from lifelong.schedules.basic import Constant
from lifelong.schedules.schedulefree_support import eval_mode, resume_training_point, training_point
from lifelong.schedules.wsd import check_branch_floor, decay_branch
from lifelong.strategies import Strategy, make_strategy
from lifelong.strategies.base import task_free_names
from lifelong.tracking.files import save_torch_atomic
from lifelong.tracking.resources import peak_rss_mb
from lifelong.training import distributed
from lifelong.training.checkpoint import load_checkpoint, save_checkpoint
from lifelong.training.config import RunConfig
from lifelong.training.evaluator import Evaluator, mean_seen
from lifelong.training.learner import Learner
from lifelong.training.recorder import Recorder, StepCallback, StepLosses

CHECKPOINT = "checkpoint.pt"


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


def describe(obj: Any) -> str:
    """`module.Name` of a user's class or object (what a run records about the model or optimizer it got)."""
    cls = obj if isinstance(obj, type) or callable(obj) and not isinstance(obj, nn.Module) else type(obj)
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', type(cls).__name__)}"


def data_order(n: int, seed: int, experience: int, epochs: int) -> Tensor:
    """Positions 0..n-1 in the order they are trained on: one fresh permutation per epoch."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + experience * 7919 + 17)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])


def without_augment(stream: Stream) -> None:
    """Drop the training augmentation of every dataset of `stream` (copies: cached datasets are shared)."""
    plain: dict[int, ArrayDataset] = {}
    for e in [*stream.experiences, *(stream.eval_sets or [])]:
        if e.data.augment is not None:
            e.data = plain.setdefault(id(e.data), dataclasses.replace(e.data, augment=None))


class Engine:
    """Trains one configuration on one stream.

    `run_dir`: record into a new run directory (created only after everything has been validated and built),
    or, with `resume=True`, continue the interrupted run there from its checkpoint. `on_step` and `loggers`
    (csv, jsonl, tensorboard, mlflow) receive progress. `dataset` or `stream` replace the scenario's data.
    `on_experience(i, row)` is called after experience i's evaluation and checkpoint (a tuner prunes from it:
    an exception it raises ends the run, resumable from that checkpoint).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | os.PathLike | None = None, *, resume: bool = False,
                 on_step: StepCallback | None = None, loggers: tuple[str, ...] | list[str] = (),
                 dataset: ArrayDataset | None = None, stream: Stream | None = None,
                 model: nn.Module | Callable[..., nn.Module] | None = None, optimizer: Any = None,
                 on_experience: Callable[[int, list[float]], None] | None = None) -> None:
        self.cfg = cfg
        self.on_experience = on_experience
        torch.set_num_threads(cfg.threads)
        self.world, self.device = distributed.join(pick_device(cfg.device))
        self.data_source = "stream" if stream is not None else "dataset" if dataset is not None else "scenario"
        stream = stream or cfg.make_stream(dataset)
        if not cfg.augment:
            without_augment(stream)
        self.stream = self.to_device(stream)
        self.strategy: Strategy = make_strategy(cfg.strategy, cfg.hparams)
        self.train_stream = self.strategy.adapt_stream(self.stream)
        self.check_stream_settings()
        torch.manual_seed(cfg.seed)
        self.model_source = describe(model) if model is not None else None
        self.optimizer_source = describe(optimizer) if optimizer is not None else None
        model = self.build_model(model).to(self.device)
        self.check_user_model(model)  # every model: the user's come from Python, import paths and plugins alike
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.recorder = Recorder(None, on_step if self.world.main else None)  # replaced by the run
        # directory's once everything is built (on rank 0 only: the other ranks of a data-parallel run write nothing)
        self.learner = Learner(cfg, self.stream, self.train_stream, self.strategy, model, self.device,
                               self.generator, self.save_artifact, optimizer, self.world)
        self.evaluator = Evaluator(cfg, self.stream, self.learner)
        self.check_branch_rates()
        self.check_eval_every()
        self.position = {"experience": 0, "step": 0, "global_step": 0}
        self.rows: list[list[float]] = []
        self.initial: list[float] = []
        self.train_seconds = 0.0
        self.boundaries: list[int] = []
        self.curve_steps: list[int] = []
        self.curve: list[list[float | None]] = []
        self.latest_accuracy: float | None = None
        self.branches: list[dict[str, Any]] = []
        self.pre_anneal: dict[str, Any] | None = None
        self.online: dict[str, Any] = {"hits": 0, "samples": 0, "anytime_samples": [], "anytime_accuracy": []}
        self.hits = torch.zeros((), dtype=torch.long, device=self.device)  # prequential hits not yet in `online`
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume_dir = self.run_dir if resume else None  # every rank loads the checkpoint from here
        if run_dir is not None and resume and self.world.main:
            self.recorder = Recorder.open(run_dir, on_step, loggers)
            self.check_same_data(self.recorder.store.meta().get("data"))
        elif run_dir is not None and self.world.main:
            self.recorder = Recorder.create(run_dir, cfg.to_dict(), on_step, loggers,
                                            desc=f"{cfg.strategy} s{cfg.seed}", data=self.data_record())
            self.recorder.store.set_meta(code={"model": self.model_source, "optimizer": self.optimizer_source})

    def build_model(self, given: nn.Module | Callable[..., nn.Module] | None) -> nn.Module:
        """The configured backbone, or the user's: an nn.Module as is, or a factory(input_shape, num_classes)."""
        shape, n = self.stream[0].data.shape, self.stream.num_classes
        if given is None:
            return self.cfg.build_model(shape, n, self.stream[0].data.default_model)
        model = given if isinstance(given, nn.Module) else given(shape, n)
        if not isinstance(model, nn.Module):
            raise LifelongError(f"the model factory returned {type(model).__name__}, not a torch.nn.Module")
        return model

    def check_user_model(self, model: nn.Module) -> None:
        """Refuse, in one line, a user's model that cannot train on this stream: parameters that are not float32
        (inputs are float32), inputs it cannot take, an output that is not a tensor of logits (N, classes), or
        another number of outputs than classes (task masks, output masks, online label masks and several
        strategies' targets are sized by the classes; strategies that grow the model are not checked for width).
        One eval-mode forward of two rows, with torch's generator put back afterwards."""
        n = self.stream.num_classes
        odd = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                      if p.is_floating_point() and p.dtype != torch.float32})
        if odd:
            raise LifelongError(f"the model has {', '.join(odd)} parameters, and lifelong feeds it float32 inputs: "
                                "convert it with model.float() (precision='bf16-mixed' trains in lower precision)")
        exp = self.stream[0]
        split = "test" if len(exp.test_idx) else "train"
        idx = (exp.test_idx if split == "test" else exp.train_idx)[:2]
        x = exp.data.prepare(exp.raw(idx, split))
        was = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad():
                out = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            if is_out_of_memory(err):
                raise
            raise LifelongError(f"the model cannot take this data's inputs (float32 rows of shape "
                                f"{tuple(x.shape[1:])}): {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                                ) from None
        finally:
            model.train(was)
        if not isinstance(out, Tensor):
            raise LifelongError(f"the model returned a {type(out).__name__}, not a tensor of logits (N, {n}): "
                                "make its forward return the logits alone")
        if out.ndim != 2 or len(out) != len(x):
            raise LifelongError(f"the model returned a tensor of shape {tuple(out.shape)} for {len(x)} inputs, not "
                                f"logits of shape ({len(x)}, {n})")
        if out.shape[1] != n and not self.strategy.overrides("adapt_model"):
            raise LifelongError(f"the model gives {out.shape[1]} outputs per input, and the stream has {n} classes "
                                f"(labels 0..{n - 1}): give it a head of {n} outputs")

    @property
    def scenario_name(self) -> str:
        """The scenario as the user knows it: the config's name, or the stream's own name for the user's data."""
        return self.cfg.scenario if self.data_source == "scenario" else self.stream.name

    def data_record(self) -> dict[str, Any]:
        """What the run trained on: a name, where it came from, a fingerprint, and whether the config rebuilds it."""
        return {"name": self.stream.name, "source": self.data_source, "fingerprint": self.stream.fingerprint(),
                "rebuild": "from the config" if self.data_source == "scenario" else None,
                "shape": list(self.stream[0].data.shape), "num_classes": self.stream.num_classes}

    def check_same_data(self, stored: dict[str, Any] | None) -> None:
        """Resume only on the data the run started with (runs recorded before fingerprints are not checked)."""
        if not stored:
            return
        where = self.recorder.dir
        if stored["source"] != "scenario" and self.data_source == "scenario":
            self.recorder.close()
            raise LifelongError(f"run {where} was trained on your own data '{stored['name']}' (passed as "
                                f"{stored['source']}=...): resume it from Python with the same data, "
                                f"lifelong.resume('{where}', {stored['source']}=...)")
        if self.stream.fingerprint() != stored["fingerprint"]:
            self.recorder.close()
            raise LifelongError(f"run {where} was trained on other data than given now ('{stored['name']}', "
                                f"fingerprint {stored['fingerprint'][:12]}, now {self.stream.fingerprint()[:12]}): "
                                "pass the same data to resume it")

    def check_stream_settings(self) -> None:
        """Settings and strategy fit the stream (one line each, before anything is trained or written)."""
        cfg, stream = self.cfg, self.stream
        if cfg.output_mask == "experience":
            if stream.online:
                raise LifelongError("output_mask=experience masks the current experience's classes, which an "
                                    "online stream hides: use output_mask=none")
            if self.strategy.family == "replay" or any(getattr(p, "family", "") == "replay"
                                                       for p in getattr(self.strategy, "parts", [])):
                raise LifelongError(f"output_mask=experience scores only the current experience's classes, so "
                                    f"{cfg.strategy}'s replayed samples of other classes cannot be scored: use "
                                    "output_mask=none with replay")
        if not stream.online:
            if cfg.online_iter != 1:
                raise LifelongError(f"online_iter={cfg.online_iter} applies to online streams only ({stream.name} "
                                    "has boundaries): use epochs for more passes")
            return
        if not self.strategy.task_free:
            raise LifelongError(f"{cfg.strategy} needs experience boundaries, which the online stream {stream.name} "
                                f"hides; task-free strategies: {', '.join(task_free_names())}")
        if cfg.epochs != 1:
            raise LifelongError(f"epochs={cfg.epochs}: an online stream is seen once (use online_iter={cfg.epochs} "
                                "for more steps on each incoming batch)")
        if cfg.branch_every_experience:
            raise LifelongError("branch_every_experience needs experience boundaries, which online streams hide")
        if cfg.schedule and cfg.schedule_mode != "continue":
            raise LifelongError(f"schedule_mode={cfg.schedule_mode} restarts at experience boundaries, which online "
                                "streams hide: use schedule_mode=continue")
        if len(self.train_stream) != len(stream):
            raise LifelongError(f"{cfg.strategy} rebuilds the stream, which online streams do not allow")

    @staticmethod
    def validate(cfg: RunConfig) -> None:
        """Check names and hyperparameters without loading any data (fails fast, before work starts)."""
        parse_scenario(cfg.scenario)
        make_strategy(cfg.strategy, cfg.hparams)
        if cfg.model != "auto":
            MODELS.get(cfg.model)
        pick_device(cfg.device)

    # --- views on the stages ----------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        return self.learner.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.learner.optimizer

    def check_eval_every(self) -> None:
        """Continual evaluation that would record nothing is refused (it was silently an empty curve)."""
        every, total = self.cfg.eval_every, self.total_steps()
        if every and total == 0:
            raise LifelongError(f"eval_every={every}: this run takes no SGD step ({self.cfg.strategy} learns every "
                                "experience in closed form), so there is nothing to evaluate between steps")
        if every > total > 0:
            raise LifelongError(f"eval_every={every} is longer than the whole run ({total} steps): no continual "
                                "evaluation would be made; give a smaller value")

    def experience_steps(self) -> list[int]:
        return self.learner.experience_steps()

    def total_steps(self) -> int:
        return sum(self.experience_steps())

    def evaluate(self) -> list[float]:
        return self.evaluator.evaluate()

    def save_artifact(self, name: str, obj: Any) -> Path | None:
        """Write `obj` as `<name>.pt` into the run directory and record it (a strategy's model, e.g.)."""
        if self.recorder.dir is None:
            return None
        path = self.recorder.dir / f"{name}.pt"
        save_torch_atomic(obj, path)
        self.recorder.artifact(name, path, "strategy")
        return path

    # --- set-up ----------------------------------------------------------------------------------------
    def to_device(self, stream: Stream) -> Stream:
        if self.device.type == "cpu":
            return stream
        moved: dict[int, ArrayDataset] = {}
        for e in [*stream, *(stream.eval_sets or [])]:
            e.data = moved.setdefault(id(e.data), e.data.to(self.device))
            if e.label_map is not None:
                e.label_map = e.label_map.to(self.device)
        return stream

    def check_branch_rates(self) -> None:
        """A decay branch must decay: refuse a `branch_min_lr` above the rate an experience ends at."""
        if not self.cfg.branch_every_experience:
            return
        schedule = self.learner.lr_schedule
        n = len(self.train_stream)
        check_branch_floor(self.cfg.branch_min_lr, schedule.end_rates() if schedule is not None
                           else [self.optimizer.param_groups[0]["lr"]] * n)

    def seen_experiences(self, train_index: int) -> int:
        """How many evaluated sets count as seen after training experience `train_index`: all of them for
        streams with `eval_sets` (their order is not the training order) and for rebuilt streams."""
        if self.stream.eval_sets is not None:
            return len(self.stream.eval_sets)
        if len(self.train_stream) != len(self.stream):
            return len(self.stream)
        return train_index + 1

    def step_losses(self) -> StepLosses:
        """Where the steps' losses wait to be recorded: on the CPU each step's is read at once (a read costs
        nothing there, and an `on_step` callback sees the model right after its step); on an accelerator up to
        32 steps' are read together, so the host never waits for the device between steps (the callback then
        runs for those steps together, after the last of them)."""
        return StepLosses(self.recorder, every=1 if self.device.type == "cpu" else 32)

    # --- continual evaluation --------------------------------------------------------------------------
    def continual_evaluation(self, seen: int) -> None:
        self.evaluator.submit(self.position["global_step"], seen)
        self.record_curve(self.evaluator.collect())

    def record_curve(self, rows: list[tuple[int, list[float | None]]]) -> None:
        for step, row in rows:
            self.curve_steps.append(step)
            self.curve.append(row)
            self.latest_accuracy = mean_seen(row)
            self.recorder.curve_point(step, row)

    def drain_probe(self) -> None:
        """Wait for continual evaluations still in flight (before checkpoints and at the end)."""
        self.record_curve(self.evaluator.collect(wait=True))

    # --- checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        self.drain_probe()
        if self.recorder.dir is None:
            return
        self.recorder.flush()
        if self.stream.online:
            self.recorder.anytime(self.online["anytime_samples"], self.online["anytime_accuracy"])
        train_point = training_point(self.optimizer, self.model)  # schedule-free: exact weights to resume from
        with eval_mode(self.optimizer):
            save_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "strategy": self.strategy.state_dict(), "generator": self.generator.get_state(),
                "position": dict(self.position), "rows": self.rows, "initial": self.initial,
                "train_seconds": self.train_seconds, "boundaries": self.boundaries,
                "curve_steps": self.curve_steps, "curve": self.curve, "branches": self.branches,
                "pre_anneal": self.pre_anneal, "train_model": train_point,
                "scaler": None if self.learner.scaler is None else self.learner.scaler.state_dict(),
                "torch_rng": self.global_rng_state(),
                **({"online": self.online_state()} if self.stream.online else {}),
            }, self.recorder.dir / CHECKPOINT)

    def global_rng_state(self) -> dict[str, Tensor] | None:
        """torch's global generator (and the GPU's), which the model's own randomness draws from (dropout): saved
        so a resumed run draws what the uninterrupted one did. Not in a data-parallel run, where each process
        has its own and only the first writes the checkpoint."""
        if self.world.active:
            return None
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_global_rng_state(self, state: dict[str, Tensor] | None) -> None:
        if state is None or self.world.active:
            return
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def load_model_and_optimizer(self, model_state: dict[str, Any], optimizer_state: dict[str, Any],
                                 where: Path | None) -> None:
        """The checkpoint's weights and optimizer state, or one line when the model or optimizer given to the
        resume is not the one the run was trained with (torch's error, or a KeyError at the first step)."""
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as err:
            raise LifelongError(f"the checkpoint of {where} holds another model's weights "
                                f"({str(err).splitlines()[0][:160]}): resume with the model the run was trained "
                                "with") from None
        saved = [sorted(set(g) - {"params"}) for g in optimizer_state.get("param_groups", [])]
        now = [sorted(set(g) - {"params"}) for g in self.optimizer.param_groups]
        if saved != now:
            raise LifelongError(f"the checkpoint of {where} holds another optimizer's state (its settings: "
                                f"{', '.join(saved[0]) if saved else 'none'}; this one's: "
                                f"{', '.join(now[0]) if now else 'none'}): resume with the optimizer the run was "
                                "trained with")
        self.optimizer.load_state_dict(optimizer_state)

    def restore(self) -> bool:
        """Load the run's checkpoint if there is one; True if training continues from it."""
        where = self.recorder.dir or self.resume_dir
        state = None if where is None else load_checkpoint(where / CHECKPOINT)
        if self.world.active:  # every rank has read it (before rank 0 may replace or delete it), and all agree
            found = distributed.count_true(state is not None, self.world, self.device)
            if 0 < found < self.world.size:
                raise LifelongError(f"{found} of {self.world.size} processes found the checkpoint {where}/{CHECKPOINT}"
                                    ": the run directory must be on a filesystem every process sees")
        if state is None:
            return False
        position = state["position"]
        begun = position["experience"] + (1 if position["step"] > 0 else 0)
        if self.stream.online:
            if begun > 0:
                self.learner.adapt(self.first_view())  # the online loop grows the model once
        else:
            for k in range(min(begun, len(self.train_stream))):
                self.learner.adapt(self.train_stream[k])  # replay model growth before loading the weights
        self.load_model_and_optimizer(state["model"], state["optimizer"], where)
        self.strategy.load_state_dict(state["strategy"])
        self.generator.set_state(state["generator"])
        self.position, self.rows, self.initial = position, state["rows"], state["initial"]
        self.train_seconds = state["train_seconds"]
        self.boundaries, self.curve_steps, self.curve = state["boundaries"], state["curve_steps"], state["curve"]
        self.branches = state.get("branches", [])
        self.pre_anneal = state.get("pre_anneal")
        if self.learner.scaler is not None and state.get("scaler"):
            self.learner.scaler.load_state_dict(state["scaler"])
        resume_training_point(self.optimizer, self.model, state.get("train_model"))
        self.set_global_rng_state(state.get("torch_rng"))
        if self.stream.online:
            online = state["online"]
            self.learner.allowed.copy_(torch.tensor(online.pop("seen"), dtype=torch.bool))  # type: ignore[union-attr]
            self.online = online
        return True

    # --- online streams ------------------------------------------------------------------------------------
    def online_state(self) -> dict[str, Any]:
        """The online counters with the prequential hits folded in, and the seen labels (for a checkpoint)."""
        self.online["hits"] += int(self.hits)
        self.hits.zero_()
        return {**self.online, "seen": self.learner.allowed.tolist()}  # type: ignore[union-attr]

    def first_view(self) -> Experience:
        """What the strategy's `adapt_model`/`begin_experience` get on an online stream: the first segment with
        no sample in it (no data, classes or test samples from the future)."""
        first = self.train_stream[0]
        return dataclasses.replace(first, train_idx=first.train_idx[:0], test_idx=first.test_idx[:0], classes=[])

    def arrived_view(self) -> Experience:
        """What `end_experience` gets on an online stream: every sample that arrived (index 0, the labels seen),
        when the segments share their data and maps; otherwise the last segment (as index 0)."""
        segments, last = self.train_stream.experiences, self.train_stream[-1]
        seen = torch.nonzero(self.learner.allowed).flatten().tolist()  # type: ignore[arg-type]
        if all(e.data is last.data and e.input_map is last.input_map and e.label_map is last.label_map
               for e in segments):
            return dataclasses.replace(last, index=0, train_idx=torch.cat([e.train_idx for e in segments]),
                                       test_idx=last.test_idx[:0], classes=seen)
        return dataclasses.replace(last, index=0, classes=seen)

    def anytime_evaluation(self, before: int, after: int) -> None:
        """The anytime evaluations due when the samples seen went from `before` to `after`."""
        for _ in range(evaluation_points(before, after, self.cfg.eval_every_samples)):
            self.online["anytime_samples"].append(after)
            self.online["anytime_accuracy"].append(self.evaluator.anytime())

    def train_segment(self, exp: Experience, base_seconds: float, start: float) -> None:
        """One segment of an online stream: incoming batches in arrival order, each predicted, then learned."""
        cfg, learner, evaluator = self.cfg, self.learner, self.evaluator
        B, iters = cfg.batch_size, cfg.online_iter
        if exp.index == 0 and self.position["step"] == 0:
            view = self.first_view()
            learner.adapt(view)
            self.strategy.begin_experience(view)
        batches = math.ceil(exp.num_train / B)
        before = sum(math.ceil(e.num_train / B) for e in self.train_stream.experiences[:exp.index])
        grand_total = self.total_steps()
        seen_sets = self.seen_experiences(exp.index)
        k0, g0 = self.position["experience"], self.position["global_step"] - self.position["step"] * iters
        rates = learner.rates(k0, g0, batches * iters)
        allowed = learner.allowed
        order = exp.train_idx
        losses = self.step_losses()
        self.model.train()
        for b in range(self.position["step"], batches):
            idx = order[b * B:(b + 1) * B]
            self.hits += evaluator.prequential(exp, idx)
            allowed[exp.labels(idx)] = True  # type: ignore[index]
            for j in range(iters):
                if rates is not None:
                    learner.set_rate(rates[b * iters + j])
                loss = learner.step(exp, idx, before + b, observe=j == 0)
                g = self.position["global_step"] = self.position["global_step"] + 1
                losses.add(g, grand_total, exp.index, loss, None, self.latest_accuracy,
                           self.optimizer.param_groups[0]["lr"])
                if cfg.eval_every and g % cfg.eval_every == 0:
                    losses.flush()  # a non-finite loss stops the run before its weights are evaluated
                    self.continual_evaluation(seen_sets)
            self.position["step"] = b + 1
            samples = self.online["samples"]
            self.online["samples"] = samples + len(idx)
            self.anytime_evaluation(samples, samples + len(idx))
            if cfg.checkpoint_every and g // cfg.checkpoint_every > (g - iters) // cfg.checkpoint_every \
                    and b + 1 < batches:
                losses.flush()
                self.train_seconds = base_seconds + time.perf_counter() - start
                self.checkpoint()
        losses.flush()
        if exp.index == len(self.train_stream) - 1:
            with eval_mode(learner.optimizer):
                self.strategy.end_experience(self.arrived_view())

    # --- training ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train over the whole stream (or what remains of it after a checkpoint) and return the result."""
        resumed = self.restore()
        if not resumed:
            self.initial = self.evaluate()
            self.recorder.accuracy_row(-1, self.initial)
        start = time.perf_counter()
        base_seconds = self.train_seconds
        train = self.train_segment if self.stream.online else self.train_experience
        for i in range(self.position["experience"], len(self.train_stream)):
            train(self.train_stream[i], base_seconds, start)
            self.rows.append(self.evaluate())
            self.latest_accuracy = mean_seen(self.rows[-1], self.seen_experiences(i))
            self.boundaries.append(self.position["global_step"])
            self.recorder.accuracy_row(i, self.rows[-1], self.seen_experiences(i))
            self.recorder.boundaries(self.boundaries)
            self.position = {"experience": i + 1, "step": 0, "global_step": self.position["global_step"]}
            self.train_seconds = base_seconds + time.perf_counter() - start
            self.checkpoint()
            if self.on_experience is not None:
                self.on_experience(i, self.rows[-1])
        if self.stream.online:
            self.online["a_last"] = self.evaluator.anytime()
        self.evaluator.close()
        return self.result()

    def begin_experience(self, exp: Experience) -> None:
        """Continue from the pre-anneal weights (infinite schedule), grow the model, tell the strategy."""
        if self.pre_anneal is not None:
            self.model.load_state_dict(self.pre_anneal["model"])
            self.optimizer.load_state_dict(self.pre_anneal["optimizer"])
            self.pre_anneal = None
        self.learner.adapt(exp)
        self.strategy.begin_experience(exp)

    def save_pre_anneal(self, exp: Experience, step: int) -> None:
        schedule = self.learner.lr_schedule
        if (schedule is None or schedule.mode != "infinite" or self.cfg.infinite_continue != "pre-anneal"
                or exp.index + 1 >= len(self.train_stream) or step != schedule.anneal_start(exp.index)):
            return
        self.pre_anneal = copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})

    def train_experience(self, exp: Experience, base_seconds: float, start: float) -> None:
        cfg, learner, strategy = self.cfg, self.learner, self.strategy
        if self.position["step"] == 0:
            self.begin_experience(exp)
        learner.allow_experience(exp)
        if not strategy.learns_by_sgd(exp):
            self.model.eval()
            strategy.fit_experience(exp)
        else:
            self.train_steps(exp, base_seconds, start)
        if cfg.branch_every_experience:
            self.branch(exp)
        with eval_mode(learner.optimizer):
            strategy.end_experience(exp)

    def train_steps(self, exp: Experience, base_seconds: float, start: float) -> None:
        cfg, learner = self.cfg, self.learner
        B = cfg.batch_size
        steps_per_epoch = math.ceil(exp.num_train / B)
        total = steps_per_epoch * cfg.epochs
        order = exp.train_idx[data_order(exp.num_train, cfg.seed, exp.index, cfg.epochs).to(exp.train_idx.device)]
        grand_total = self.total_steps()
        eval_every = cfg.eval_every
        seen = self.seen_experiences(exp.index)
        k0, g0 = self.position["experience"], self.position["global_step"] - self.position["step"]
        rates = learner.rates(k0, g0, total)
        losses = self.step_losses()
        self.model.train()
        for s in range(self.position["step"], total):
            self.save_pre_anneal(exp, s)
            epoch, k = divmod(s, steps_per_epoch)
            idx = order[epoch * exp.num_train + k * B: epoch * exp.num_train + min((k + 1) * B, exp.num_train)]
            if rates is not None:
                learner.set_rate(rates[s])
            loss = learner.step(exp, idx)
            g = self.position["global_step"] = self.position["global_step"] + 1
            self.position["step"] = s + 1
            losses.add(g, grand_total, exp.index, loss, learner.grad_norms, self.latest_accuracy,
                       self.optimizer.param_groups[0]["lr"])
            if eval_every and g % eval_every == 0:
                losses.flush()  # a non-finite loss stops the run before its weights are evaluated
                self.continual_evaluation(seen)
            if cfg.checkpoint_every and g % cfg.checkpoint_every == 0 and s + 1 < total:
                losses.flush()
                self.train_seconds = base_seconds + time.perf_counter() - start
                self.checkpoint()
        losses.flush()

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
        Experiences learned in closed form have no steps to branch from and are skipped.
        """
        if not self.strategy.learns_by_sgd(exp):
            return
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
        name = f"branch_exp{k}"
        with torch.random.fork_rng(devices=devices):
            self.model.train()
            for i, rate in enumerate(rates):
                self.learner.set_rate(rate)
                last = self.learner.step(exp, order[i * B:(i + 1) * B])
            loss = last.item()  # the branch's last loss only: no wait for the device at every step
            accuracy = self.evaluate()
            if self.recorder.dir is not None:
                with eval_mode(self.optimizer):
                    save_torch_atomic(self.model.state_dict(), self.recorder.dir / f"{name}.pt")
                self.recorder.artifact(name, self.recorder.dir / f"{name}.pt", "model")
        self.model.load_state_dict(snapshot[0])
        self.optimizer.load_state_dict(snapshot[1])
        self.strategy.load_state_dict(snapshot[2])
        self.generator.set_state(generator_state)
        seen = self.seen_experiences(k)
        self.branches.append({"after_experience": k, "step": g, "steps": steps, "start_lr": high,
                              "shape": cfg.branch_shape, "accuracy": accuracy,
                              "final_accuracy": mean_seen(accuracy, seen), "final_loss": loss,
                              "artifact": name if self.recorder.dir is not None else None,
                              "seconds": time.perf_counter() - started})
        self.recorder.branches(self.branches)

    def learned_at(self) -> list[int | None]:
        """For each eval set, the first training experience holding one of its classes (None: never trained)."""
        firsts: list[int | None] = []
        for s in self.stream.evaluated:
            want = set(s.classes)
            firsts.append(next((i for i, e in enumerate(self.train_stream) if want & set(e.classes)), None))
        return firsts

    def result(self) -> dict[str, Any]:
        seconds = self.train_seconds
        samples = sum(self.cfg.epochs * e.num_train for e in self.train_stream)
        online = {}
        if self.stream.online:
            state = self.online_state()
            online = online_summary(state["hits"], state["samples"], state["anytime_samples"],
                                    state["anytime_accuracy"], state.get("a_last"))
        evaluated = self.stream.eval_sets
        return {
            "strategy": self.cfg.strategy,
            "seed": self.cfg.seed,
            **(summarize(self.rows, self.initial) if evaluated is None else
               summarize(self.rows, self.initial, learned_at=self.learned_at())),
            **({"learned_at": self.learned_at()} if evaluated is not None else {}),
            **online,
            "accuracy_matrix": self.rows,
            "initial_accuracy": self.initial,
            "train_seconds": seconds,
            "samples_per_second": samples / seconds if seconds > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "hparams": dict(self.strategy.hp),
            **({"stacked_with": self.learner.stack.size} if self.learner.stack is not None else {}),
            **({"curve": {"steps": self.curve_steps, "accuracy": self.curve}} if self.cfg.eval_every else {}),
            **({"branches": self.branches} if self.cfg.branch_every_experience else {}),
        }
