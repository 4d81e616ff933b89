"""Metric loggers: CSV, JSONL, progress bar, TensorBoard and MLflow (the last two only when installed)."""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest

from lifelong.errors import LifelongError
from lifelong.tracking.loggers import (
    CSVLogger,
    JSONLLogger,
    Logger,
    ProgressLogger,
    TensorBoardLogger,
    close_all,
    make_loggers,
    step_callback,
)


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_csv_widens_and_resumes(tmp_path):
    log = CSVLogger(tmp_path / "m.csv")
    log.log(1, {"loss": 2.0})
    log.log(2, {"loss": 1.5, "note": "text is dropped"})
    log.log(3, {"loss": 1.0, "accuracy": np.float32(0.75)})  # a new column: the file is rewritten once
    log.close()
    assert read_csv(tmp_path / "m.csv") == [["step", "loss", "accuracy"], ["1", "2.0", ""], ["2", "1.5", ""],
                                            ["3", "1.0", "0.75"]]
    again = CSVLogger(tmp_path / "m.csv")  # a resumed run appends under the same header
    again.log(4, {"accuracy": 0.5})
    again.close()
    assert read_csv(tmp_path / "m.csv")[-1] == ["4", "", "0.5"]


def test_jsonl(tmp_path):
    log = JSONLLogger(tmp_path / "m.jsonl")
    log.log(1, {"loss": 0.5})
    log.log(2, {"loss": float("nan"), "accuracy": 1})
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 0.5), (2, None)] and rows[1]["accuracy"] == 1.0
    assert all("time" in r for r in rows)


def test_progress_bar_shows_step_loss_and_last_accuracy():
    out = io.StringIO()
    bar = ProgressLogger(total=None, file=out, disable=False, mininterval=0)
    callback = step_callback([bar])
    for step in range(1, 11):
        callback(step, 10, 1.0 / step)
        if step == 5:
            bar.log(step, {"accuracy": 0.75})
    bar.close()
    text = out.getvalue()
    assert "10/10" in text and "loss=0.1" in text and "accuracy=0.75" in text


def test_make_loggers_by_name_and_errors(tmp_path):
    loggers = make_loggers("csv, jsonl", tmp_path)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "JSONLLogger"]
    assert all(isinstance(lg, Logger) for lg in loggers)
    close_all(loggers)
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "metrics.jsonl").is_file()
    with pytest.raises(LifelongError, match="unknown logger 'cvs'. Did you mean 'csv'"):
        make_loggers(["cvs"], tmp_path)


def test_missing_extras_give_install_hints(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(LifelongError, match=r"pip install 'lifelong\[tensorboard\]'"):
        make_loggers(["csv", "tensorboard"], tmp_path)
    for mod in ("mlflow", "mlflow.entities", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(LifelongError, match=r"pip install 'lifelong\[mlflow\]'"):
        make_loggers(["mlflow"], tmp_path)


def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra 'tensorboard' not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TensorBoardLogger(tmp_path / "tb")
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step})
    log.log(3, {"accuracy": 0.5})
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    assert [e.value for e in acc.Scalars("accuracy")] == [0.5]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # sqlalchemy deprecations inside mlflow
def test_mlflow_local_store_read_back(tmp_path):
    pytest.importorskip("mlflow", reason="optional extra 'mlflow' not installed")
    from mlflow.tracking import MlflowClient

    (log,) = make_loggers(["mlflow"], tmp_path / "run", params={"strategy": "ewc", "hidden": [64, 64]})
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step, "skip": float("inf")})
    log.close()
    assert (tmp_path / "run" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=log.tracking_uri)
    run = client.get_run(log.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"strategy": "ewc", "hidden": "[64, 64]"}
    assert run.info.run_name == "run"
    history = sorted((m.step, m.value) for m in client.get_metric_history(log.run_id, "loss"))
    assert history == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]


def test_progress_without_a_terminal_prints_periodic_lines_and_messages():
    out = io.StringIO()  # not a terminal
    bar = ProgressLogger(total=100, desc="er s0", file=out, plain_interval=3600)
    for step in range(1, 101):
        bar.log(step, {"loss": 1.0 / step})
    bar.write("a message")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["er s0: step 1/100 loss 1", "a message", "er s0: step 100/100 loss 0.01"]
    quiet = io.StringIO()
    silent = ProgressLogger(total=5, file=quiet, disable=True)
    silent.log(5, {"loss": 1.0})
    silent.write("hidden")
    silent.close()
    assert quiet.getvalue() == ""
