"""Streams whose evaluation sets are not one non-empty test set per experience: a Si-Blurry task without a class
of its own (an empty test set, NaN accuracy), and SCoLe's per-class sets (classes recur across experiences)."""

from __future__ import annotations

import json
import math

from lifelong.evaluation.continual import curve_metrics
from lifelong.evaluation.metrics import final_accuracy
from lifelong.report.html import read_run, write_run_report
from lifelong.tracking.files import finite_json, write_json_atomic
from lifelong.tracking.store import RunStore
from lifelong.training import runner


def test_si_blurry_with_an_empty_task_runs_continual_evaluation_reports_and_writes_strict_json(tmp_path,
                                                                                              digits_cfg):
    cfg = digits_cfg(scenario="si-blurry-digits", strategy="er", batch_size=10, eval_every=10, seed=0,
                     epochs=1)
    assert any(len(e.test_idx) == 0 for e in cfg.make_stream().evaluated)  # the case: a task with no class
    result = runner.run(cfg, tmp_path / "r")  # ZeroDivisionError in the continual probe before
    empty = [j for j, e in enumerate(cfg.make_stream().evaluated) if len(e.test_idx) == 0]
    assert all(row[j] is None for row in result["curve"]["accuracy"] for j in empty)
    assert all(math.isnan(row[j]) for row in result["accuracy_matrix"] for j in empty)
    text = (tmp_path / "r" / "result.json").read_text()
    assert "NaN" not in text and json.loads(text)["accuracy_matrix"][0][empty[0]] is None
    run = read_run(tmp_path / "r")  # a TypeError (None from the store) before
    assert math.isclose(run["metrics"]["final_accuracy"], result["final_accuracy"])
    write_run_report(tmp_path / "r", tmp_path / "report.html")


def test_the_store_gives_back_nan_for_an_empty_sets_accuracy_and_json_writes_null(tmp_path):
    store = RunStore.create(tmp_path / "r", {"config": {}})
    store.write_accuracy_row(0, [0.5, float("nan"), 1.0])
    row = store.accuracy_rows()[0]
    assert math.isnan(row[1]) and final_accuracy([row]) == 0.75
    assert final_accuracy([[0.5, None, 1.0]]) == 0.75  # None, as a hand-edited or older record holds it
    store.close()
    assert finite_json({"a": [1.0, float("nan"), (float("inf"), 2)], "b": "nan"}) == {"a": [1.0, None, [None, 2]],
                                                                                        "b": "nan"}
    write_json_atomic({"x": float("nan")}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"x": None}


def test_curve_metrics_are_undefined_where_curve_columns_are_not_the_experiences():
    curve = {"steps": [1, 2, 3, 4], "accuracy": [[0.5, 0.0], [0.9, 0.0], [0.2, 0.6], [0.1, 0.8]]}
    per_experience = curve_metrics(curve, [2, 4], learned_at=[0, 1])
    assert per_experience == curve_metrics(curve, [2, 4])  # column j learned in experience j: as without
    assert per_experience["min_acc"] == 0.1
    recurring = curve_metrics(curve, [2, 4], learned_at=[1, 0])  # SCoLe-like: column 0 is learned later
    assert recurring["evaluations"] == 4
    assert all(recurring[k] is None for k in ("min_acc", "wc_acc", "wf10", "wp10", "lca"))
    assert recurring["stability_gaps"] == [] and recurring["task_drops"] == []


def test_scole_run_leaves_continual_metrics_undefined_and_still_reports(tmp_path, digits_cfg):
    cfg = digits_cfg(scenario="scole-digits", experiences=8, strategy="naive", eval_every=5)
    result = runner.run(cfg, tmp_path / "r")
    assert result["learned_at"] != list(range(len(result["learned_at"])))
    assert result["min_acc"] is None and result["stability_gaps"] == [] and result["evaluations"] > 0
    assert read_run(tmp_path / "r")["metrics"]["min_acc"] is None


def test_fwt_is_left_out_of_comparisons_of_class_incremental_online_streams():
    from lifelong.report.tables import fwt_meaningful

    for name in ("si-blurry-digits", "online-split-digits", "scole-digits", "split-digits"):
        assert not fwt_meaningful(name)
    assert fwt_meaningful("permuted-digits") and fwt_meaningful("task-split-digits")
    nan = float("nan")
    assert not fwt_meaningful("mine", [[[0.9, nan, 0.0], [0.8, 0.7, 0.0], [0.5, 0.6, 0.9]]])  # NaN is not > 0
    assert fwt_meaningful("mine", [[[0.9, 0.1], [0.8, 0.7]]])
