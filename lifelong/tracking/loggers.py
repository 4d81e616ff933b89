"""Metric loggers: console progress bar, CSV, JSON lines, TensorBoard and MLflow, behind one small protocol.

    logger.log(step, {"loss": 0.31, "accuracy": 0.82})   # any numeric values, at a global step
    logger.close()

The run store (SQLite) stays the record of a run; loggers are extra views of the same numbers. Each one uses
its library (csv, json, tqdm, torch.utils.tensorboard, mlflow); TensorBoard and MLflow are optional extras,
imported only when asked for. `make_loggers(["csv", "tensorboard"], run_dir)` builds them by name.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from lifelong.errors import LifelongError, unknown_name
from lifelong.tracking.files import atomic_path

CSV_NAME = "metrics.csv"
JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"


@runtime_checkable
class Logger(Protocol):
    def log(self, step: int, values: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite-or-not real numbers among `values` (bools and non-numbers dropped)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = float(v)  # 0-d tensors, numpy scalars
            except (TypeError, ValueError):
                continue
        out[str(k)] = float(v)
    return out


# --- console -------------------------------------------------------------------------------------------------
class ProgressLogger:
    """Progress over global steps showing the latest loss, accuracy and any other logged number.

    On a terminal (or `disable=False`) a tqdm bar; elsewhere (`disable=None` with a log file or CI output) a plain
    line at most every `plain_interval` seconds and at the end (None: only `write` messages); nothing with
    `disable=True`. Values keep their last logged value, so an accuracy logged every K steps stays visible
    between evaluations."""

    def __init__(self, total: int | None = None, desc: str = "training", file: IO[str] | None = None,
                 disable: bool | None = None, mininterval: float = 0.5, plain_interval: float | None = 5.0) -> None:
        self.file = file if file is not None else sys.stderr
        self.desc, self.total, self.step, self.silent = desc, total, 0, disable is True
        self.plain_interval, self.printed, self.printed_step = plain_interval or 0.0, -math.inf, 0
        self.last: dict[str, float] = {}
        self.bar = None
        if disable is False or (disable is None and self.file.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", file=self.file, mininterval=mininterval,
                            dynamic_ncols=True)
        self.plain = self.bar is None and not self.silent and plain_interval is not None  # periodic lines

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        self.last.update(_numeric(values))
        self.step = max(self.step, step)
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in self.last.items()}, refresh=False)
            if step > self.bar.n:
                self.bar.update(step - self.bar.n)
        elif self.plain and time.monotonic() - self.printed >= self.plain_interval:
            self.print_line()

    def print_line(self) -> None:
        self.printed, self.printed_step = time.monotonic(), self.step
        values = " ".join(f"{k} {v:.4g}" for k, v in self.last.items())
        print(f"{self.desc}: step {self.step}/{self.total or '?'} {values}".rstrip(), file=self.file, flush=True)

    def write(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        elif not self.silent:
            print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.plain and self.step != self.printed_step:
            self.print_line()


# --- files ---------------------------------------------------------------------------------------------------
class CSVLogger:
    """One row per `log` call: step, then one column per metric name (empty where not logged at that step).

    New metric names widen the file (it is rewritten once with the new header); an existing file is appended
    to, so a resumed run continues its file (steps after the last checkpoint may then appear twice)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] = ["step"]
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self.fields = next(csv.reader(f), ["step"]) or ["step"]
        self.file = self.path.open("a", newline="", buffering=1)
        self.writer = csv.DictWriter(self.file, self.fields)
        if self.path.stat().st_size == 0:
            self.writer.writeheader()

    def _widen(self, names: Iterable[str]) -> None:
        self.file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields += [n for n in names if n not in self.fields]
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)
        self.file = self.path.open("a", newline="", buffering=1)
        self.writer = csv.DictWriter(self.file, self.fields)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        row = {"step": int(step), **_numeric(values)}
        new = [k for k in row if k not in self.fields]
        if new:
            self._widen(new)
        self.writer.writerow(row)

    def close(self) -> None:
        self.file.close()


class JSONLLogger:
    """One JSON object per `log` call: {"step": s, "time": unix seconds, name: value, ...} (NaN/inf as null)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a", buffering=1)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        row = {k: (v if math.isfinite(v) else None) for k, v in _numeric(values).items()}
        self.file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **row}) + "\n")

    def close(self) -> None:
        self.file.close()


# --- optional extras ------------------------------------------------------------------------------------------
class TensorBoardLogger:
    """Scalars for TensorBoard (`tensorboard --logdir RUN_DIR/tensorboard`), through torch's SummaryWriter."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LifelongError("the tensorboard logger needs the tensorboard package: "
                                "pip install 'lifelong[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        for k, v in _numeric(values).items():
            self.writer.add_scalar(k, v, int(step))

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    """Params and metrics in an MLflow run, stored locally in RUN_DIR/mlflow.db (MLflow's default SQLite store;
    browse it with `mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db`), or at `tracking_uri`.

    Metrics are sent in batches of `batch` values (and on close) through MlflowClient, without touching the
    global mlflow state."""

    def __init__(self, run_dir: str | os.PathLike, run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, experiment: str = "lifelong",
                 tracking_uri: str | None = None, batch: int = 500) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise LifelongError("the mlflow logger needs the mlflow package: pip install 'lifelong[mlflow]'") from None
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or f"sqlite:///{run_dir / MLFLOW_DB}"
        self.Metric = Metric
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=(run_dir / MLFLOW_ARTIFACTS).as_uri())
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        if params:
            flat = [Param(str(k)[:250], json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                    for k, v in params.items()]
            for i in range(0, len(flat), 100):
                self.client.log_batch(self.run_id, params=flat[i:i + 100])
        self.batch = batch
        self.pending: list[Any] = []

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        now = int(time.time() * 1000)
        self.pending += [self.Metric(k, v, now, int(step)) for k, v in _numeric(values).items() if math.isfinite(v)]
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            part, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.run_id, metrics=part)

    def close(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status)


# --- construction by name ----------------------------------------------------------------------------------------
LOGGERS = ("progress", "csv", "jsonl", "tensorboard", "mlflow")


def make_loggers(names: Sequence[str] | str, run_dir: str | os.PathLike, *, total: int | None = None,
                 params: Mapping[str, Any] | None = None, run_name: str | None = None,
                 desc: str = "training") -> list[Logger]:
    """Loggers by name ("progress", "csv", "jsonl", "tensorboard", "mlflow"; a comma-separated string works too),
    writing under `run_dir`: metrics.csv, metrics.jsonl, tensorboard/, mlflow.db. `total` and `desc` are the progress
    bar's number of steps and label; `params` (e.g. the run config) and `run_name` go to MLflow.

    An unknown name, or an optional extra that is not installed, raises LifelongError before anything is made."""
    if isinstance(names, str):
        names = [names]
    wanted = list(dict.fromkeys(n.strip().lower() for item in names for n in item.split(",") if n.strip()))
    for n in wanted:
        if n not in LOGGERS:
            raise unknown_name("logger", n, LOGGERS)
    run_dir = Path(run_dir)
    made: list[Logger] = []
    try:
        for n in wanted:
            if n == "progress":
                made.append(ProgressLogger(total, desc=desc))
            elif n == "csv":
                made.append(CSVLogger(run_dir / CSV_NAME))
            elif n == "jsonl":
                made.append(JSONLLogger(run_dir / JSONL_NAME))
            elif n == "tensorboard":
                made.append(TensorBoardLogger(run_dir / TENSORBOARD_DIR))
            else:
                made.append(MLflowLogger(run_dir, run_name=run_name or run_dir.name, params=params))
    except BaseException:
        close_all(made)
        raise
    return made


def log_all(loggers: Iterable[Logger], step: int, values: Mapping[str, Any]) -> None:
    for logger in loggers:
        logger.log(step, values)


def close_all(loggers: Iterable[Logger]) -> None:
    """Close every logger, even when one of them fails (the first error is raised afterwards)."""
    error: BaseException | None = None
    for logger in loggers:
        try:
            logger.close()
        except Exception as err:  # keep closing the others
            error = error or err
    if error is not None:
        raise error


def step_callback(loggers: Sequence[Logger]) -> Callable[[int, int, float, float | None], None]:
    """An `Engine(on_step=...)` callback, (global step, total steps, loss, accuracy) -> log {"loss": loss} to
    every logger, and the accuracy whenever a new evaluation changed it (the first call also tells progress
    bars the total)."""
    told = False
    last_accuracy: float | None = None

    def on_step(step: int, total: int, loss: float, accuracy: float | None = None) -> None:
        nonlocal told, last_accuracy
        if not told:
            for logger in loggers:
                if isinstance(logger, ProgressLogger):
                    logger.set_total(total)
            told = True
        values = {"loss": loss}
        if accuracy is not None and accuracy != last_accuracy:
            values["accuracy"] = last_accuracy = accuracy
        log_all(loggers, step, values)

    return on_step
