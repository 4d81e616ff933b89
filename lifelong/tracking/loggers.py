"""Metric loggers: console progress bar, CSV, JSON lines, TensorBoard, MLflow and Weights & Biases, behind one
small protocol.

    logger.log(step, {"loss": 0.31, "lr": 0.01})                     # any numeric values, at a global step
    logger.evaluation(step, {"eval/exp_0": 0.9, "eval/mean_seen": 0.9})     # every continual evaluation
    logger.experience_end(step, 2, {"accuracy/exp_0": .., "accuracy/average": .., "forgetting": .., "bwt": ..})
    logger.summary(step, {"final/accuracy": ..., "final/min_acc": ...}, params)   # once, at the end of a run
    logger.failed("why")                                                # the run ended in an error
    logger.close()

Only `log` and `close` are required (`Logger`): a logger without the other events gets their values through
`log` (see `emit`). `BaseLogger` gives every event that default. The run store (SQLite) stays the record of a
run; loggers are extra views of the same numbers, fed by `lifelong.training.recorder.Recorder`. Each one uses its
library (csv, json, tqdm, torch.utils.tensorboard, mlflow, wandb); the last three are optional extras, imported
only when asked for. `make_loggers(["csv", "tensorboard"], run_dir)` builds them by name.

Metric names: `loss`, `lr`, `samples_per_second` per step; `eval/exp_<j>` and `eval/mean_seen` at every
continual evaluation; `accuracy/exp_<j>`, `accuracy/average`, `forgetting` and `bwt` after each experience;
`final/<metric>` (the run's result metrics, continual-evaluation ones included) at the end.
"""

from __future__ import annotations

import csv
import importlib.util
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
WANDB_DIR = "wandb"
DEFAULT_EXPERIMENT = "lifelong"


@runtime_checkable
class Logger(Protocol):
    """What every logger has; the optional events of `BaseLogger` fall back to `log`."""

    def log(self, step: int, values: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class BaseLogger:
    """Default events: an evaluation, an experience end and the run's summary are logged like any values."""

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def evaluation(self, step: int, values: Mapping[str, Any]) -> None:
        """One continual evaluation (`eval/exp_<j>`, `eval/mean_seen`), logged every time it happens."""
        self.log(step, values)

    def experience_end(self, step: int, experience: int, values: Mapping[str, Any]) -> None:
        """After experience `experience`: `accuracy/exp_<j>`, `accuracy/average`, `forgetting`, `bwt`."""
        self.log(step, values)

    def summary(self, step: int, metrics: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """The end of a run: its final metrics and its settings (as hyperparameters where the tool has them)."""
        self.log(step, metrics)

    def failed(self, error: str | None) -> None:
        """The run ended in an error (None: interrupted)."""

    def close(self) -> None:
        pass


def emit(loggers: Iterable[Any], event: str, *args: Any) -> None:
    """Send `event` ("evaluation", "experience_end", "summary", "failed") to every logger; a logger that has
    only `log` gets the event's values through it (the last argument; "failed" then sends nothing)."""
    for logger in loggers:
        method = getattr(logger, event, None)
        if method is not None:
            method(*args)
        elif event != "failed":
            logger.log(args[0], args[-1] if event != "summary" else args[1])


def flat_params(params: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """Settings as hyperparameters: scalars kept, anything else (lists, dicts, None) as its JSON text."""
    out: dict[str, str | int | float | bool] = {}
    for k, v in params.items():
        out[str(k)] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True, default=str)
    return out


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
class ProgressLogger(BaseLogger):
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

    def evaluation(self, step: int, values: Mapping[str, Any]) -> None:
        """Shows the mean accuracy over the seen experiences as `accuracy`."""
        if "eval/mean_seen" in values:
            self.last["accuracy"] = float(values["eval/mean_seen"])

    def experience_end(self, step: int, experience: int, values: Mapping[str, Any]) -> None:
        """One line per finished experience: its average accuracy, forgetting and BWT, in percent."""
        avg = values.get("accuracy/average")
        if avg is None:
            return
        self.last["accuracy"] = float(avg)
        parts = [f"average accuracy {100 * avg:.1f}%"]
        parts += [f"{name} {100 * values[name]:+.1f}%" if name == "bwt" else f"{name} {100 * values[name]:.1f}%"
                  for name in ("forgetting", "bwt") if values.get(name) is not None]
        self.write(f"{self.desc}: experience {experience} done at step {step}: " + ", ".join(parts))

    def summary(self, step: int, metrics: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        pass

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
class CSVLogger(BaseLogger):
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


class JSONLLogger(BaseLogger):
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
class TensorBoardLogger(BaseLogger):
    """Scalars for TensorBoard (`tensorboard --logdir RUN_DIR/tensorboard`), through torch's SummaryWriter; at
    the end of a run its settings and final metrics in the HParams tab (several runs side by side with
    `tensorboard --logdir STORE`)."""

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

    def summary(self, step: int, metrics: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """The final metrics as scalars, and the HParams record pairing them with the run's settings (written
        into this run's own event file, not into a sub-run as SummaryWriter.add_hparams would)."""
        from torch.utils.tensorboard.summary import hparams

        finite = {k: v for k, v in _numeric(metrics).items() if math.isfinite(v)}
        self.log(step, finite)
        writer = self.writer._get_file_writer()
        for record in hparams(flat_params(params), finite):
            writer.add_summary(record)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def mlflow_target(run_dir: str | os.PathLike, tracking_uri: str | None = None,
                  experiment: str | None = None) -> tuple[str, str]:
    """(tracking URI, experiment name) an MLflow logger uses: the arguments, else MLFLOW_TRACKING_URI and
    MLFLOW_EXPERIMENT_NAME, else a SQLite store shared by the runs beside `run_dir` (`<its parent>/mlflow.db`,
    i.e. the store root of `lifelong run` and the comparison directory of `lifelong compare`) and experiment
    "lifelong"."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{Path(run_dir).resolve().parent / MLFLOW_DB}"
    return uri, experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def mlflow_experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created if missing (artifacts beside a local SQLite store); safe when
    several worker processes create it at once."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / MLFLOW_ARTIFACTS).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created by another process meanwhile (MlflowException)
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def prepare_mlflow(run_dir: str | os.PathLike, tracking_uri: str | None = None,
                   experiment: str | None = None) -> str:
    """Create the MLflow store and experiment once, before worker processes log into it; returns the URI."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise LifelongError("the mlflow logger needs the mlflow package: pip install 'lifelong[mlflow]'") from None
    uri, name = mlflow_target(run_dir, tracking_uri, experiment)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow_experiment_id(MlflowClient(tracking_uri=uri), name, uri)
    return uri


class MLflowLogger(BaseLogger):
    """Params and metrics in an MLflow run. Where they go: `tracking_uri`, else MLFLOW_TRACKING_URI, else a SQLite
    store shared by the runs beside this one (`<parent of run_dir>/mlflow.db`), so that `mlflow ui
    --backend-store-uri sqlite:///runs/mlflow.db` compares them; the experiment is `experiment`, else
    MLFLOW_EXPERIMENT_NAME, else "lifelong" (`lifelong run --mlflow-experiment NAME` sets it).

    The run's settings are MLflow params (lists and dicts as JSON); metrics are sent in batches of `batch` values
    (and on close) through MlflowClient, without touching the global mlflow state. A failed run ends FAILED."""

    def __init__(self, run_dir: str | os.PathLike, run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, experiment: str | None = None,
                 tracking_uri: str | None = None, batch: int = 500) -> None:
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise LifelongError("the mlflow logger needs the mlflow package: pip install 'lifelong[mlflow]'") from None
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri, self.experiment = mlflow_target(run_dir, tracking_uri, experiment)
        self.Metric = Metric
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        exp_id = mlflow_experiment_id(self.client, self.experiment, self.tracking_uri)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        if params:
            flat = [Param(k[:250], str(v)[:6000]) for k, v in flat_params(params).items()]
            for i in range(0, len(flat), 100):
                self.client.log_batch(self.run_id, params=flat[i:i + 100])
        self.batch = batch
        self.pending: list[Any] = []
        self.status = "FINISHED"

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        now = int(time.time() * 1000)
        self.pending += [self.Metric(k, v, now, int(step)) for k, v in _numeric(values).items() if math.isfinite(v)]
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            part, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.run_id, metrics=part)

    def failed(self, error: str | None) -> None:
        self.status = "FAILED" if error is not None else "KILLED"

    def close(self, status: str | None = None) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status or self.status)


class WandbLogger(BaseLogger):
    """A Weights & Biases run: the settings as its config, every metric through `run.log`, the final metrics in
    its summary. The project is `project`, else WANDB_PROJECT, else "lifelong"; files go to RUN_DIR/wandb.
    Without an account or network, set WANDB_MODE=offline (and `wandb sync` the run later)."""

    def __init__(self, run_dir: str | os.PathLike, run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, project: str | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise LifelongError("the wandb logger needs the wandb package: pip install 'lifelong[wandb]' "
                                "(or pip install wandb); set WANDB_MODE=offline to log without an account") from None
        run_dir = Path(run_dir)
        (run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_EXPERIMENT,
                                  name=run_name, config=dict(params or {}), dir=str(run_dir / WANDB_DIR),
                                  reinit="create_new")
        except Exception as err:  # noqa: BLE001 - wandb raises its own errors (login, network); one line
            raise LifelongError(f"the wandb logger could not start a run ({str(err).splitlines()[0][:200]}); "
                                "set WANDB_MODE=offline to log without an account or network") from None
        self.exit_code = 0

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        numbers = _numeric(values)
        if numbers:
            self.run.log(numbers, step=int(step))

    def summary(self, step: int, metrics: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        self.run.summary.update(_numeric(metrics))

    def failed(self, error: str | None) -> None:
        self.exit_code = 1

    def close(self) -> None:
        self.run.finish(exit_code=self.exit_code)


# --- construction by name ----------------------------------------------------------------------------------------
LOGGERS = ("progress", "csv", "jsonl", "tensorboard", "mlflow", "wandb")


EXTRAS = {"tensorboard": ("tensorboard", "pip install 'lifelong[tensorboard]'"),
          "mlflow": ("mlflow", "pip install 'lifelong[mlflow]'"),
          "wandb": ("wandb", "pip install 'lifelong[wandb]' (or pip install wandb); set WANDB_MODE=offline to log "
                    "without an account")}


def make_loggers(names: Sequence[str] | str, run_dir: str | os.PathLike, *, total: int | None = None,
                 params: Mapping[str, Any] | None = None, run_name: str | None = None,
                 desc: str = "training") -> list[Logger]:
    """Loggers by name ("progress", "csv", "jsonl", "tensorboard", "mlflow", "wandb"; a comma-separated string
    works too), writing under `run_dir`: metrics.csv, metrics.jsonl, tensorboard/, wandb/ (MLflow: see
    `MLflowLogger`). `total` and `desc` are the progress bar's number of steps and label; `params` (e.g. the run
    config) and `run_name` go to MLflow and W&B.

    An unknown name, or an optional extra that is not installed, raises LifelongError before anything is made."""
    if isinstance(names, str):
        names = [names]
    wanted = list(dict.fromkeys(n.strip().lower() for item in names for n in item.split(",") if n.strip()))
    for n in wanted:
        if n not in LOGGERS:
            raise unknown_name("logger", n, LOGGERS)
    for n in wanted:  # before any logger writes a file: a missing extra leaves nothing behind
        package, install = EXTRAS.get(n, (None, ""))
        if package is not None and importlib.util.find_spec(package) is None:
            raise LifelongError(f"the {n} logger needs the {package} package: {install}")
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
            elif n == "wandb":
                made.append(WandbLogger(run_dir, run_name=run_name or run_dir.name, params=params))
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
