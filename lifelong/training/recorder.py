"""The recorder: every write of a run to its store and to its loggers, in one place.

A run with a directory records into `run.sqlite` there (config, environment, accuracy rows, losses, the
continual-evaluation curve, branches, artifacts, status) and feeds the step callback and the extra loggers
(progress, CSV, JSONL, TensorBoard, MLflow, W&B). Without a directory (`Recorder()`), only the step callback is
fed. What the loggers receive (names in lifelong.tracking.loggers):

- every step: `loss`, `lr` (when the engine passes it) and, every `rate_every` steps, `samples_per_second`
  (wall-clock over those steps, evaluations included, counted in full batches of the config's batch_size);
- every continual evaluation (`curve_point`): `eval/exp_<j>` for the seen experiences and `eval/mean_seen`;
- after each experience (`accuracy_row`): `accuracy/exp_<j>` for the seen experiences, `accuracy/average`
  (their mean), and from the second experience on `forgetting` and `bwt` of the matrix so far;
- at the end (`finished`): `final/<metric>` for every scalar metric of the result (continual-evaluation ones
  included) together with the run's settings, which TensorBoard shows as hparams (MLflow and W&B get them as
  params / config when the run starts).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lifelong.errors import LifelongError
from lifelong.evaluation.metrics import average_forgetting, backward_transfer
from lifelong.schedules.refined import NORM_SCALARS
from lifelong.tracking.files import write_json_atomic
from lifelong.tracking.loggers import Logger, ProgressLogger, close_all, emit, log_all, make_loggers
from lifelong.tracking.resources import environment
from lifelong.tracking.store import RunStore, hold_run_dir

StepCallback = Callable[[int, int, float, "float | None"], None]  # (global step, total steps, loss, accuracy)
RATE_EVERY = 50  # steps between samples/s measurements sent to the loggers


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a run's result as `final/<name>` (final_accuracy as `final/accuracy`)."""
    skip = {"seed", "train_seconds", "peak_rss_mb", "evaluations"}
    out = {}
    for k, v in result.items():
        if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out["final/accuracy" if k == "final_accuracy" else f"final/{k}"] = float(v)
    for k in ("train_seconds", "peak_rss_mb"):
        if isinstance(result.get(k), (int, float)):
            out[f"cost/{k}"] = float(result[k])
    return out


class PendingStep(NamedTuple):
    """One step taken but not yet recorded (its loss still on the device)."""

    step: int
    total: int
    experience: int
    loss: Any
    norms: Any
    accuracy: float | None
    lr: float
    at: float


class StepLosses:
    """The losses (and gradient norms) of the steps since the last `flush`, read from the device together and
    then recorded step by step, in order, with what each step saw (accuracy, learning rate, time).

    A `loss.item()` per step makes the host wait for the accelerator at every step; on a GPU, where a small
    model's step is bound by kernel launches, the queue then drains at each step instead of running ahead. The
    engine flushes before anything that must see every loss so far (a continual evaluation, a checkpoint, the
    end of an experience), and on its own every `every` steps or `seconds` after the oldest pending step (so
    progress shows on slow steps too). A non-finite loss stops the run at the flush, naming its step; steps
    after it in the same flush were taken but nothing of them is recorded or checkpointed."""

    def __init__(self, recorder: Recorder, every: int = 32, seconds: float = 0.5) -> None:
        self.recorder, self.every, self.seconds = recorder, every, seconds
        self.pending: list[PendingStep] = []

    def add(self, step: int, total: int, experience: int, loss: Any, norms: Any, accuracy: float | None,
            lr: float) -> None:
        """Step `step` of `total` (global), of `experience`: its 0-dim `loss` tensor and its gradient norms
        tensor (None when not recorded)."""
        self.pending.append(PendingStep(step, total, experience, loss, norms, accuracy, lr, time.perf_counter()))
        if len(self.pending) >= self.every or self.pending[-1].at - self.pending[0].at >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        if len(pending) == 1 and pending[0].norms is None:
            rows = [[pending[0].loss.item()]]
        else:  # one wait for the device
            rows = torch.stack([torch.cat([p.loss.float().reshape(1), *([] if p.norms is None else [p.norms])])
                                for p in pending]).tolist()
        for p, (value, *norms) in zip(pending, rows, strict=True):
            if not math.isfinite(value):
                raise LifelongError(f"loss became {value} at step {p.step} (experience {p.experience}): lower the "
                                    "learning rate or the penalty strength; results up to the last checkpoint "
                                    "are kept")
            self.recorder.step(p.step, p.total, value, p.accuracy, norms or None, p.lr, at=p.at)


class Recorder:
    """Where a run's records go. `create` starts a new run directory, `open` continues an interrupted one."""

    def __init__(self, store: RunStore | None = None, on_step: StepCallback | None = None,
                 loggers: Sequence[Logger] = (), config: dict[str, Any] | None = None,
                 rate_every: int = RATE_EVERY, lock: Any = None) -> None:
        self.store = store
        self.lock = lock  # the run directory's lock (hold_run_dir), released by close()
        self.loggers = list(loggers)
        self.on_step = on_step
        self.config = dict(config or {})
        self.pending: list[tuple[int, str, float]] = []
        self.rows: dict[int, list[float]] = store.accuracy_rows() if store is not None and self.loggers else {}
        self.last_step = 0
        self.told_total = False
        self.rate_every = rate_every
        self.rate_mark: tuple[int, float] | None = None

    @classmethod
    def create(cls, run_dir: str | os.PathLike, config: dict[str, Any], on_step: StepCallback | None = None,
               loggers: Sequence[str] = (), desc: str = "training", data: dict[str, Any] | None = None) -> Recorder:
        store = RunStore.create(run_dir, {"config": config, "env": environment(), "boundaries": [],
                                          **({"data": data} if data is not None else {})})
        lock = None
        try:
            lock = hold_run_dir(run_dir)
            made = make_loggers(list(loggers), store.dir, params=config, desc=desc)
        except BaseException:
            store.discard()  # a logger that cannot be made (a typo, a missing extra): the directory stays free
            if lock is not None:
                lock.close()
            raise
        return cls(store, on_step, made, config, lock=lock)

    @classmethod
    def open(cls, run_dir: str | os.PathLike, on_step: StepCallback | None = None,
             loggers: Sequence[str] = ()) -> Recorder:
        store, lock = RunStore.open(run_dir), None
        try:
            lock = hold_run_dir(run_dir)  # a run still going in another process is not resumed under it
            config = store.meta().get("config", {})
            made = make_loggers(list(loggers), store.dir, params=config, desc=f"resume {store.dir.name}")
        except BaseException:
            store.close()
            if lock is not None:
                lock.close()
            raise
        return cls(store, on_step, made, config, lock=lock)

    @property
    def dir(self) -> Path | None:
        return None if self.store is None else self.store.dir

    # --- during training ------------------------------------------------------------------------------
    def step(self, step: int, total: int, loss: float, accuracy: float | None,
             grad_norms: list[float] | None = None, lr: float | None = None, at: float | None = None) -> None:
        """One training step: its loss (and l2, l1 gradient norms when recorded) to the store; loss, learning
        rate and samples/s to the loggers; progress to the step callback. `at`: when the step was taken
        (time.perf_counter; default now), for samples/s when steps are recorded in batches (StepLosses)."""
        self.pending.append((step, "loss", loss))
        if grad_norms is not None:
            self.pending += [(step, NORM_SCALARS[2.0], grad_norms[0]), (step, NORM_SCALARS[1.0], grad_norms[1])]
        if self.on_step is not None:
            self.on_step(step, total, loss, accuracy)
        self.last_step = step
        if not self.loggers:
            return
        if not self.told_total:
            for logger in self.loggers:
                if isinstance(logger, ProgressLogger):
                    logger.set_total(total)
            self.told_total = True
        values = {"loss": loss, **({"lr": lr} if lr is not None else {})}
        now = time.perf_counter() if at is None else at
        if self.rate_mark is None:
            self.rate_mark = (step, now)
        elif step - self.rate_mark[0] >= self.rate_every or step == total:
            batch = self.config.get("batch_size")
            if isinstance(batch, int) and now > self.rate_mark[1]:
                values["samples_per_second"] = (step - self.rate_mark[0]) * batch / (now - self.rate_mark[1])
            self.rate_mark = (step, now)
        log_all(self.loggers, step, values)

    def flush(self) -> None:
        """Write the losses collected since the last flush (at checkpoints and at the end)."""
        if self.store is not None and self.pending:
            self.store.log_scalars(self.pending)
        self.pending = []

    def accuracy_row(self, row: int, accuracies: list[float], seen: int | None = None) -> None:
        """Row `row` of the accuracy matrix (-1: before training) to the store; after an experience, its
        accuracies on the `seen` experiences (default: the first row + 1), their average, and the forgetting
        and BWT of the matrix so far to the loggers."""
        if self.store is not None:
            self.store.write_accuracy_row(row, accuracies)
        if not self.loggers or row < 0:
            return
        self.rows[row] = list(accuracies)
        seen = min(seen if seen is not None else row + 1, len(accuracies))
        values: dict[str, float] = {f"accuracy/exp_{j}": a for j, a in enumerate(accuracies[:seen])}
        values["accuracy/average"] = sum(accuracies[:seen]) / seen
        if row >= 1 and seen == row + 1 and all(i in self.rows for i in range(row + 1)):
            matrix = [self.rows[i][:seen] for i in range(row + 1)]
            values["forgetting"] = average_forgetting(matrix)
            values["bwt"] = backward_transfer(matrix)
        emit(self.loggers, "experience_end", self.last_step, row, values)

    def boundaries(self, boundaries: list[int]) -> None:
        if self.store is not None:
            self.store.set_meta(boundaries=boundaries)

    def curve_point(self, step: int, row: list[float | None]) -> None:
        """One continual evaluation: to the store, and to the loggers every time (not only when it changed)."""
        seen = {j: a for j, a in enumerate(row) if a is not None}
        if self.store is not None:
            self.store.log_curve(step, seen)
        if self.loggers and seen:
            values = {f"eval/exp_{j}": a for j, a in seen.items()}
            values["eval/mean_seen"] = sum(seen.values()) / len(seen)
            emit(self.loggers, "evaluation", step, values)

    def anytime(self, samples: list[int], accuracy: list[float | None]) -> None:
        """The anytime-accuracy curve of an online stream so far (samples seen, accuracy on seen classes) to the
        store's meta (the final one is also in the result)."""
        if self.store is not None:
            self.store.set_meta(anytime={"samples": samples, "accuracy": accuracy})

    def branches(self, branches: list[dict[str, Any]]) -> None:
        if self.store is not None:
            self.store.set_meta(branches=branches)

    def artifact(self, name: str, path: Path, kind: str) -> None:
        if self.store is not None:
            self.store.add_artifact(name, path, kind)

    # --- the run's outcome ----------------------------------------------------------------------------
    def resumed(self) -> None:
        if self.store is not None:
            self.store.set_meta(status="running")
            self.store.add_event("resume", {"from_checkpoint": (self.store.dir / "checkpoint.pt").exists()})

    def failed(self, error: str | None = None) -> None:
        self.flush()
        emit(self.loggers, "failed", error)
        if self.store is not None:
            self.store.set_meta(status="failed" if error is not None else "interrupted",
                                **({"error": error} if error is not None else {}))

    def finished(self, result: dict[str, Any]) -> None:
        self.flush()
        if self.store is not None:
            self.store.set_meta(status="finished", result=result, finished=time.time())
            write_json_atomic(result, self.store.dir / "result.json")
        if self.loggers:
            emit(self.loggers, "summary", self.last_step, final_metrics(result), self.config)

    def close(self) -> None:
        try:
            close_all(self.loggers)
        finally:
            try:
                if self.store is not None:
                    self.store.close()
            finally:
                if self.lock is not None:
                    self.lock.close()
                    self.lock = None
