"""The recorder: every write of a run to its store and to its loggers, in one place.

A run with a directory records into `run.sqlite` there (config, environment, accuracy rows, losses, the
continual-evaluation curve, branches, artifacts, status) and feeds the step callback and the extra loggers
(CSV, JSONL, TensorBoard, MLflow). Without a directory (`Recorder()`), only the step callback is fed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lifelong.schedules.refined import NORM_SCALARS
from lifelong.tracking.files import write_json_atomic
from lifelong.tracking.loggers import Logger, close_all, make_loggers, step_callback
from lifelong.tracking.resources import environment
from lifelong.tracking.store import RunStore

StepCallback = Callable[[int, int, float, "float | None"], None]  # (global step, total steps, loss, accuracy)


class Recorder:
    """Where a run's records go. `create` starts a new run directory, `open` continues an interrupted one."""

    def __init__(self, store: RunStore | None = None, on_step: StepCallback | None = None,
                 loggers: Sequence[Logger] = ()) -> None:
        self.store = store
        self.loggers = list(loggers)
        feed = step_callback(self.loggers) if self.loggers else None
        callbacks = [c for c in (on_step, feed) if c is not None]
        self.on_step: StepCallback | None = None
        if len(callbacks) == 1:
            self.on_step = callbacks[0]
        elif callbacks:
            def both(step: int, total: int, loss: float, accuracy: float | None) -> None:
                for c in callbacks:
                    c(step, total, loss, accuracy)
            self.on_step = both
        self.pending: list[tuple[int, str, float]] = []

    @classmethod
    def create(cls, run_dir: str | os.PathLike, config: dict[str, Any], on_step: StepCallback | None = None,
               loggers: Sequence[str] = (), desc: str = "training", data: dict[str, Any] | None = None) -> Recorder:
        store = RunStore.create(run_dir, {"config": config, "env": environment(), "boundaries": [],
                                          **({"data": data} if data is not None else {})})
        return cls(store, on_step, make_loggers(list(loggers), store.dir, params=config, desc=desc))

    @classmethod
    def open(cls, run_dir: str | os.PathLike, on_step: StepCallback | None = None,
             loggers: Sequence[str] = ()) -> Recorder:
        store = RunStore.open(run_dir)
        config = store.meta().get("config", {})
        return cls(store, on_step, make_loggers(list(loggers), store.dir, params=config,
                                                desc=f"resume {store.dir.name}"))

    @property
    def dir(self) -> Path | None:
        return None if self.store is None else self.store.dir

    # --- during training ------------------------------------------------------------------------------
    def step(self, step: int, total: int, loss: float, accuracy: float | None,
             grad_norms: list[float] | None = None) -> None:
        """One training step: its loss (and l2, l1 gradient norms when recorded) to the store, progress out."""
        self.pending.append((step, "loss", loss))
        if grad_norms is not None:
            self.pending += [(step, NORM_SCALARS[2.0], grad_norms[0]), (step, NORM_SCALARS[1.0], grad_norms[1])]
        if self.on_step is not None:
            self.on_step(step, total, loss, accuracy)

    def flush(self) -> None:
        """Write the losses collected since the last flush (at checkpoints and at the end)."""
        if self.store is not None and self.pending:
            self.store.log_scalars(self.pending)
        self.pending = []

    def accuracy_row(self, row: int, accuracies: list[float]) -> None:
        if self.store is not None:
            self.store.write_accuracy_row(row, accuracies)

    def boundaries(self, boundaries: list[int]) -> None:
        if self.store is not None:
            self.store.set_meta(boundaries=boundaries)

    def curve_point(self, step: int, row: list[float | None]) -> None:
        if self.store is not None:
            self.store.log_curve(step, {j: a for j, a in enumerate(row) if a is not None})

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
        if self.store is not None:
            self.store.set_meta(status="failed" if error is not None else "interrupted",
                                **({"error": error} if error is not None else {}))

    def finished(self, result: dict[str, Any]) -> None:
        self.flush()
        if self.store is not None:
            self.store.set_meta(status="finished", result=result, finished=time.time())
            write_json_atomic(result, self.store.dir / "result.json")

    def close(self) -> None:
        try:
            close_all(self.loggers)
        finally:
            if self.store is not None:
                self.store.close()
