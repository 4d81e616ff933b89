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
def test_mlflow_local_store_read_back(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="optional extra 'mlflow' not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    (log,) = make_loggers(["mlflow"], tmp_path / "run", params={"strategy": "ewc", "hidden": [64, 64]})
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step, "skip": float("inf")})
    log.close()
    assert (tmp_path / "mlflow.db").is_file() and not (tmp_path / "run" / "mlflow.db").exists()  # shared store
    assert log.experiment == "lifelong"
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


class Events:
    """A logger that records every event it receives."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def log(self, step, values):
        self.seen.append(("log", step, dict(values)))

    def evaluation(self, step, values):
        self.seen.append(("evaluation", step, dict(values)))

    def experience_end(self, step, experience, values):
        self.seen.append(("experience_end", step, experience, dict(values)))

    def summary(self, step, metrics, params):
        self.seen.append(("summary", step, dict(metrics), dict(params)))

    def close(self):
        pass


def test_recorder_feeds_experience_end_every_evaluation_lr_and_rate(tmp_path):
    from lifelong.training.recorder import Recorder

    events = Events()
    rec = Recorder(None, None, [events], config={"batch_size": 4, "lr": 0.1}, rate_every=2)
    rec.step(1, 4, 2.0, None, lr=0.1)
    rec.curve_point(1, [0.5, None])
    rec.curve_point(2, [0.5, None])  # the same value again: still logged (every evaluation)
    rec.step(2, 4, 1.5, 0.5, lr=0.05)
    rec.accuracy_row(0, [1.0, 0.0])
    rec.step(3, 4, 1.0, 0.5, lr=0.05)
    rec.accuracy_row(1, [0.25, 0.75])
    rec.finished({"final_accuracy": 0.5, "min_acc": 0.25, "seed": 0, "strategy": "er"})
    evals = [e for e in events.seen if e[0] == "evaluation"]
    assert [(e[1], e[2]) for e in evals] == [(1, {"eval/exp_0": 0.5, "eval/mean_seen": 0.5})] * 1 + [
        (2, {"eval/exp_0": 0.5, "eval/mean_seen": 0.5})]
    logs = [e for e in events.seen if e[0] == "log"]
    assert [v["lr"] for _, _, v in logs] == [0.1, 0.05, 0.05]
    assert "samples_per_second" not in logs[1][2] and logs[2][2]["samples_per_second"] > 0  # every rate_every steps
    ends = [e for e in events.seen if e[0] == "experience_end"]
    assert ends[0][1:] == (2, 0, {"accuracy/exp_0": 1.0, "accuracy/average": 1.0})
    # after experience 1: R = [[1, .], [0.25, 0.75]] -> average 0.5, forgetting 1 - 0.25, BWT 0.25 - 1
    assert ends[1][1:] == (3, 1, {"accuracy/exp_0": 0.25, "accuracy/exp_1": 0.75, "accuracy/average": 0.5,
                                  "forgetting": 0.75, "bwt": -0.75})
    (summary,) = [e for e in events.seen if e[0] == "summary"]
    assert summary[2] == {"final/accuracy": 0.5, "final/min_acc": 0.25} and summary[3]["lr"] == 0.1


def test_a_logger_with_only_log_gets_every_event_through_it():
    from lifelong.tracking.loggers import emit

    class Plain:
        def __init__(self):
            self.rows = []

        def log(self, step, values):
            self.rows.append((step, dict(values)))

        def close(self):
            pass

    plain = Plain()
    emit([plain], "evaluation", 3, {"eval/mean_seen": 0.5})
    emit([plain], "experience_end", 4, 0, {"accuracy/average": 0.75})
    emit([plain], "summary", 5, {"final/accuracy": 0.7}, {"lr": 0.1})
    emit([plain], "failed", "boom")
    assert plain.rows == [(3, {"eval/mean_seen": 0.5}), (4, {"accuracy/average": 0.75}), (5, {"final/accuracy": 0.7})]


def test_tensorboard_hparams_pair_settings_with_final_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra 'tensorboard' not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    log = TensorBoardLogger(tmp_path / "tb")
    log.summary(7, {"final/accuracy": 0.625}, {"strategy": "er", "lr": 0.01, "hidden": [64, 64]})
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["strategy"].string_value == "er" and start.hparams["lr"].number_value == 0.01
    assert start.hparams["hidden"].string_value == "[64, 64]"
    assert [(e.step, e.value) for e in acc.Scalars("final/accuracy")] == [(7, 0.625)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_honours_tracking_uri_and_experiment_and_marks_failures(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="optional extra 'mlflow' not installed")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'central' / 'mlflow.db'}"
    (tmp_path / "central").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep")
    runs = []
    for name in ("a", "b"):
        (log,) = make_loggers(["mlflow"], tmp_path / name, params={"strategy": name})
        log.log(1, {"loss": 1.0})
        if name == "b":
            log.failed("boom")
        log.close()
        runs.append(log.run_id)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sweep")
    found = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_id for r in found) == sorted(runs)  # both runs in one place, one experiment
    assert {r.data.params["strategy"]: r.info.status for r in found} == {"a": "FINISHED", "b": "FAILED"}
    assert not (tmp_path / "a" / "mlflow.db").exists()


def test_wandb_offline_run_logs_and_summarises(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="optional extra 'wandb' not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    (log,) = make_loggers(["wandb"], tmp_path / "run", params={"strategy": "er", "lr": 0.1})
    log.log(1, {"loss": 2.0})
    log.evaluation(1, {"eval/mean_seen": 0.5})
    log.summary(2, {"final/accuracy": 0.75}, {})
    run = log.run
    assert run.config["strategy"] == "er" and run.summary["final/accuracy"] == 0.75
    log.close()
    assert list((tmp_path / "run" / "wandb").glob("**/offline-run-*")), "no offline run directory written"
    assert wandb.run is None  # finished


def test_wandb_missing_is_one_install_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(LifelongError, match=r"pip install 'lifelong\[wandb\]' \(or pip install wandb\)"):
        make_loggers(["wandb"], tmp_path)


def test_a_logger_whose_package_is_missing_is_refused_before_any_file_is_written(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(LifelongError, match="the wandb logger needs the wandb package"):
        make_loggers(["csv", "wandb"], tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # metrics.csv was left
